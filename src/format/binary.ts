import { LifeboatError } from '../core/errors.js';

/** Little-endian writer into a growable buffer. */
export class ByteWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initialBytes = 4096) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf.writeUInt8(v, this.pos);
    this.pos += 1;
    return this;
  }
  u16(v: number): this {
    this.ensure(2);
    this.buf.writeUInt16LE(v, this.pos);
    this.pos += 2;
    return this;
  }
  u32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
    return this;
  }
  u64(v: number): this {
    this.ensure(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.pos);
    this.pos += 8;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }
  ascii(s: string): this {
    return this.bytes(Buffer.from(s, 'ascii'));
  }
  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

/** Little-endian reader that turns any overrun into CORRUPT_OBJECT naming `what`. */
export class ByteReader {
  private pos = 0;

  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
  ) {}

  private need(n: number): void {
    if (this.pos + n > this.buf.length) {
      throw new LifeboatError('CORRUPT_OBJECT', `${this.what} ends early at byte ${this.pos}`, { details: { object: this.what } });
    }
  }
  u8(): number {
    this.need(1);
    return this.buf.readUInt8(this.pos++);
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail('a 64-bit field exceeds 2^53');
    return Number(v);
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  magic(expected: string): void {
    const got = this.bytes(expected.length).toString('latin1');
    if (got !== expected) this.fail(`bad magic ${JSON.stringify(got)}, expected ${expected}`);
  }
  version(supported: number): number {
    const v = this.u16();
    if (v === 0 || v > supported) {
      throw new LifeboatError('STORE_UNSUPPORTED_VERSION', `${this.what} has format version ${v}; this program reads up to ${supported}`);
    }
    return v;
  }
  end(): void {
    if (this.pos !== this.buf.length) this.fail(`${this.buf.length - this.pos} unexpected trailing bytes`);
  }
  fail(message: string): never {
    throw new LifeboatError('CORRUPT_OBJECT', `${this.what}: ${message}`, { details: { object: this.what } });
  }
}
