import type { FastifyInstance } from 'fastify';

/** Upper bounds of the latency histogram, in seconds. */
const BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

interface Series {
  count: number;
  sumSeconds: number;
  buckets: number[];
}

/**
 * Request counts by route, method and status, and a latency histogram by route, in
 * Prometheus text format. Routes are labelled by their declared pattern, never by
 * the concrete path ("unmatched" for unknown paths), so labels stay few whatever
 * callers send.
 */
export class HttpMetrics {
  private readonly counts = new Map<string, number>();
  private readonly latency = new Map<string, Series>();

  observe(route: string, method: string, status: number, seconds: number): void {
    const key = `${label('route', route)},${label('method', method)},${label('status', String(status))}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    const lkey = label('route', route);
    const s = this.latency.get(lkey) ?? { count: 0, sumSeconds: 0, buckets: BUCKETS_SECONDS.map(() => 0) };
    s.count += 1;
    s.sumSeconds += seconds;
    BUCKETS_SECONDS.forEach((le, i) => {
      if (seconds <= le) s.buckets[i] = (s.buckets[i] ?? 0) + 1;
    });
    this.latency.set(lkey, s);
  }

  render(): string {
    const out = ['# HELP lifeboat_http_requests_total HTTP requests answered, by route pattern, method and status.', '# TYPE lifeboat_http_requests_total counter'];
    for (const [k, v] of this.counts) out.push(`lifeboat_http_requests_total{${k}} ${v}`);
    out.push('# HELP lifeboat_http_request_duration_seconds Time to answer an HTTP request.', '# TYPE lifeboat_http_request_duration_seconds histogram');
    for (const [k, s] of this.latency) {
      BUCKETS_SECONDS.forEach((le, i) => out.push(`lifeboat_http_request_duration_seconds_bucket{${k},le="${le}"} ${s.buckets[i] ?? 0}`));
      out.push(`lifeboat_http_request_duration_seconds_bucket{${k},le="+Inf"} ${s.count}`);
      out.push(`lifeboat_http_request_duration_seconds_sum{${k}} ${s.sumSeconds}`);
      out.push(`lifeboat_http_request_duration_seconds_count{${k}} ${s.count}`);
    }
    return `${out.join('\n')}\n`;
  }
}

function label(name: string, value: string): string {
  return `${name}="${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

export function installMetrics(app: FastifyInstance, metrics: HttpMetrics): void {
  app.addHook('onResponse', async (request, reply) => {
    metrics.observe(request.routeOptions.url ?? 'unmatched', request.method.slice(0, 16), reply.statusCode, reply.elapsedTime / 1000);
  });
}
