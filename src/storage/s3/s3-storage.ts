import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { LifeboatError } from '../../core/errors.js';
import { checkRange, checkSize, redactUrl } from '../range.js';
import {
  checkKey,
  type ByteRange,
  type ObjectInfo,
  type PutOptions,
  type Storage,
  type StorageCapabilities,
} from '../storage.js';
import { mapS3Error, s3Status } from './s3-errors.js';

export interface S3Options {
  /** Read for AWS_ACCESS_KEY_ID/SECRET_ACCESS_KEY/SESSION_TOKEN, AWS_REGION, LIFEBOAT_S3_*. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Service endpoint for S3-compatible stores (MinIO, s3rver); default AWS. */
  readonly endpoint?: string;
  readonly region?: string;
  /** Bucket in the path instead of the host name; default true when an endpoint is set. */
  readonly forcePathStyle?: boolean;
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string };
  /**
   * Whether the service enforces If-None-Match: * on PutObject (AWS S3 does since
   * 2024; s3rver and some older S3-compatible stores ignore it). Default true, or
   * LIFEBOAT_S3_CONDITIONAL_CREATE=false. When false the driver still refuses a
   * create-only put of a key it sees existing, but two racing writers may both win.
   */
  readonly conditionalCreate?: boolean;
  /**
   * For services that do not list in key order as S3 does (s3rver lists in folder
   * order): read the whole listing and sort it, using memory in proportion to it.
   * Default false, or LIFEBOAT_S3_SORT_LISTING=true.
   */
  readonly sortListing?: boolean;
}

/** A single PutObject takes at most 5 GiB; larger objects would need multipart uploads. */
const MAX_PUT_OBJECT_BYTES = 5 * 2 ** 30;

/**
 * A store in an S3 bucket, opened from `s3://BUCKET/prefix`. One PutObject per
 * object, which S3 makes atomic. The SDK's own retries are off (the registry's
 * wrapper retries) and checksums are computed only where an API requires them,
 * which keeps S3-compatible services working.
 */
export class S3Storage implements Storage {
  readonly url: string;
  readonly capabilities: StorageCapabilities;

  private constructor(
    url: URL,
    private readonly client: S3Client,
    private readonly bucket: string,
    /** '' or a '/'-terminated key path every key is stored under. */
    private readonly base: string,
    conditionalCreate: boolean,
    private readonly sortListing: boolean,
  ) {
    this.url = redactUrl(url);
    this.capabilities = { conditionalCreate, maxObjectSizeBytes: MAX_PUT_OBJECT_BYTES };
  }

  /** Opens the bucket; a bucket that does not exist stops start-up with CONFIG_INVALID. */
  static async open(url: string | URL, options: S3Options = {}): Promise<S3Storage> {
    const parsed = typeof url === 'string' ? new URL(url) : url;
    const { bucket, base } = parseS3Url(parsed);
    const env = options.env ?? process.env;
    const client = new S3Client(clientConfig(options, env));
    const conditionalCreate = options.conditionalCreate ?? env.LIFEBOAT_S3_CONDITIONAL_CREATE !== 'false';
    const sortListing = options.sortListing ?? env.LIFEBOAT_S3_SORT_LISTING === 'true';
    try {
      await client.send(new HeadBucketCommand({ Bucket: bucket }));
    } catch (err) {
      client.destroy();
      if (s3Status(err) === 404) throw new LifeboatError('CONFIG_INVALID', 's3 bucket does not exist', { cause: err, details: { bucket } });
      throw mapS3Error(err, 'open', bucket);
    }
    return new S3Storage(parsed, client, bucket, base, conditionalCreate, sortListing);
  }

  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    checkKey(key);
    checkSize(key, data.length, this.capabilities.maxObjectSizeBytes);
    const createOnly = options.ifNoneMatch === true;
    // Best effort for services that ignore If-None-Match; capabilities say it is not race-free.
    if (createOnly && !this.capabilities.conditionalCreate && (await this.stat(key))) {
      throw new LifeboatError('STORAGE_PRECONDITION', `object ${key} already exists`, { details: { key } });
    }
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.base + key,
          Body: data,
          ContentLength: data.length,
          IfNoneMatch: createOnly && this.capabilities.conditionalCreate ? '*' : undefined,
        }),
      );
    } catch (err) {
      throw mapS3Error(err, 'put', key, createOnly);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    checkKey(key);
    if (range) checkRange(range);
    if (range?.length === 0) {
      // HTTP has no empty range; the contract still wants NOT_FOUND for an absent key.
      if (!(await this.stat(key))) throw new LifeboatError('NOT_FOUND', `object ${key} not found`, { details: { key } });
      return Buffer.alloc(0);
    }
    try {
      const response = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.base + key,
          Range: range ? `bytes=${range.offset}-${range.offset + range.length - 1}` : undefined,
        }),
      );
      const body = Buffer.from((await response.Body?.transformToByteArray()) ?? new Uint8Array(0));
      if (response.ContentLength !== undefined && body.length !== response.ContentLength) {
        throw new LifeboatError('STORAGE_UNAVAILABLE', 's3 download ended early', {
          details: { key, expected: response.ContentLength, received: body.length },
        });
      }
      return body;
    } catch (err) {
      // 416: the range starts at or past the end of an object that exists.
      if (range && s3Status(err) === 416) return Buffer.alloc(0);
      const mapped = mapS3Error(err, 'get', key);
      // s3rver announces one byte for a range of an empty object, then sends none.
      if (range?.offset === 0 && s3Status(err) === undefined && (await this.stat(key))?.sizeBytes === 0) return Buffer.alloc(0);
      throw mapped;
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    checkKey(key);
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.base + key }));
      return { key, sizeBytes: head.ContentLength ?? 0, modifiedAt: head.LastModified ?? new Date(0) };
    } catch (err) {
      if (s3Status(err) === 404) return undefined;
      throw mapS3Error(err, 'stat', key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    if (!this.sortListing) {
      yield* this.listPages(prefix);
      return;
    }
    const all: ObjectInfo[] = [];
    for await (const info of this.listPages(prefix, false)) all.push(info);
    yield* all.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** Yields the service's listing; `ordered` checks that it comes in key order. */
  private async *listPages(prefix: string, ordered = true): AsyncGenerator<ObjectInfo> {
    let token: string | undefined;
    let last = '';
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.base + prefix, ContinuationToken: token }),
        );
      } catch (err) {
        throw mapS3Error(err, 'list', prefix);
      }
      for (const item of page.Contents ?? []) {
        const key = (item.Key ?? '').slice(this.base.length);
        if (!isKey(key)) continue; // an object another tool wrote: not in our key space
        if (ordered && key <= last) throw new LifeboatError('STORAGE_UNAVAILABLE', 's3 listing out of order', { details: { key, last } });
        last = key;
        yield { key, sizeBytes: item.Size ?? 0, modifiedAt: item.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.base + key }));
    } catch (err) {
      if (s3Status(err) === 404) return; // some S3-compatible services answer 404 for an absent key
      throw mapS3Error(err, 'delete', key);
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

function isKey(key: string): boolean {
  try {
    checkKey(key);
    return true;
  } catch {
    return false;
  }
}

function parseS3Url(url: URL): { bucket: string; base: string } {
  if (url.protocol !== 's3:' || url.hostname === '') {
    throw new LifeboatError('CONFIG_INVALID', 's3 storage URL must be s3://BUCKET[/prefix]', { details: { url: redactUrl(url) } });
  }
  const segments = decodeURIComponent(url.pathname).split('/').filter((s) => s !== '');
  const base = segments.length > 0 ? `${segments.join('/')}/` : '';
  if (base !== '') checkKey(base.slice(0, -1));
  return { bucket: url.hostname, base };
}

function clientConfig(options: S3Options, env: Readonly<Record<string, string | undefined>>): S3ClientConfig {
  const endpoint = options.endpoint ?? env.LIFEBOAT_S3_ENDPOINT;
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  const fromEnv =
    accessKeyId && secretAccessKey ? { accessKeyId, secretAccessKey, sessionToken: env.AWS_SESSION_TOKEN || undefined } : undefined;
  const pathStyleEnv = env.LIFEBOAT_S3_PATH_STYLE;
  return {
    region: options.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    endpoint,
    forcePathStyle: options.forcePathStyle ?? (pathStyleEnv !== undefined ? pathStyleEnv === 'true' : endpoint !== undefined),
    // Without explicit keys the SDK's default chain (profiles, instance roles) applies.
    credentials: options.credentials ?? fromEnv,
    maxAttempts: 1,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
}
