import { createCipheriv, createHash } from 'node:crypto';

/**
 * Deterministic random bytes: AES-256-CTR keystream under a key derived from the
 * seed and a label. Runs with the same seed produce the same image and mutation,
 * so numbers from different runs compare; AES-NI makes it about as fast as memcpy.
 */
export class KeyStream {
  private readonly cipher;
  private zeros = Buffer.alloc(0);

  constructor(seed: number, label: string) {
    const key = createHash('sha256').update(`lifeboat-bench/${seed}/${label}`).digest();
    this.cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  }

  /** The next `length` bytes of the stream. */
  next(length: number): Buffer {
    if (this.zeros.length < length) this.zeros = Buffer.alloc(length);
    return this.cipher.update(this.zeros.subarray(0, length));
  }
}

/** Small seeded PRNG (mulberry32) for choices: log words, block offsets. */
export class Prng {
  private state: number;

  constructor(seed: number, label: string) {
    this.state = createHash('sha256').update(`lifeboat-bench/${seed}/${label}`).digest().readUInt32LE(0);
  }

  /** Uniform float in [0, 1). */
  float(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}
