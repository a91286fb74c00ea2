/**
 * CRC32C and CRC64NVME, the checksums S3 can verify for a whole multipart object (checksum type
 * FULL_OBJECT). Node has neither natively, so this is table-driven JS (slicing by 8), paid only when the
 * app asks for a checksum. Parts are checksummed once; the object's CRC is combined from the parts'
 * (zlib's crc32_combine method), so no byte is read twice.
 */

/** A checksum S3 verifies natively, as the API names it. */
export type S3ChecksumAlgorithm = 'CRC32C' | 'CRC64NVME';

export interface Crc {
  readonly name: S3ChecksumAlgorithm;
  /** The CRC of the bytes hashed so far followed by `data` (start from 0n). */
  update(crc: bigint, data: Uint8Array): bigint;
  /** The CRC of A followed by B, from crc(A), crc(B) and B's length. */
  combine(crcA: bigint, crcB: bigint, lengthB: number): bigint;
  /** The value as S3 headers carry it: big-endian bytes, base64. */
  toBase64(crc: bigint): string;
}

/** Reflected polynomials (bit 0 is x^(width-1)). */
const CRC32C_POLY = 0x82f63b78;
const CRC64NVME_POLY = 0x9a6c9329ac4bc9b5n;

export const CRC32C: Crc = createCrc('CRC32C', 32, BigInt(CRC32C_POLY));
export const CRC64NVME: Crc = createCrc('CRC64NVME', 64, CRC64NVME_POLY);

function createCrc(name: S3ChecksumAlgorithm, width: 32 | 64, poly: bigint): Crc {
  const mask = (1n << BigInt(width)) - 1n;
  // Slicing-by-8 tables, each entry split into low and high 32-bit words (high is 0 for CRC32C).
  const lo = new Int32Array(8 * 256);
  const hi = new Int32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = BigInt(i);
    for (let k = 0; k < 8; k++) c = c & 1n ? (c >> 1n) ^ poly : c >> 1n;
    lo[i] = Number(c & 0xffffffffn);
    hi[i] = Number(c >> 32n);
  }
  for (let i = 0; i < 256; i++) {
    for (let t = 1; t < 8; t++) {
      const p = (t - 1) * 256 + i;
      const idx = lo[p] & 0xff;
      lo[t * 256 + i] = ((lo[p] >>> 8) | (hi[p] << 24)) ^ lo[idx];
      hi[t * 256 + i] = (hi[p] >>> 8) ^ hi[idx];
    }
  }
  const update = width === 32 ? update32(lo) : update64(lo, hi);

  // Combination (zlib ≥ 1.2.12): crc(AB) = crc(A) · x^(8·|B|) mod P  xor  crc(B), in reflected bit order.
  const top = 1n << BigInt(width - 1);
  const multiply = (a: bigint, b: bigint): bigint => {
    let product = 0n;
    for (let m = top; m !== 0n; m >>= 1n) {
      if (a & m) {
        product ^= b;
        if ((a & (m - 1n)) === 0n) break;
      }
      b = b & 1n ? (b >> 1n) ^ poly : b >> 1n;
    }
    return product;
  };
  /** x^(2^k) mod P for k = 0…63 (x^1 is `top >> 1`). */
  const powers: bigint[] = [];
  for (let k = 0, p = top >> 1n; k < 64; k++, p = multiply(p, p)) powers.push(p);
  const combine = (crcA: bigint, crcB: bigint, lengthB: number): bigint => {
    let shift = top; // x^0
    for (let n = lengthB, k = 3; n > 0; n = Math.floor(n / 2), k++) {
      if (n % 2 === 1) shift = multiply(powers[k % 64], shift);
    }
    return multiply(shift, crcA) ^ crcB;
  };

  const bytes = width / 8;
  const toBase64 = (crc: bigint): string => {
    const out = Buffer.alloc(bytes);
    for (let i = 0; i < bytes; i++) out[i] = Number((crc >> BigInt(8 * (bytes - 1 - i))) & 0xffn);
    return out.toString('base64');
  };
  return { name, update, combine, toBase64 };
}

// Two loops, not one with a zero high word: each stays monomorphic and CRC32C runs about twice as fast.
function update32(t: Int32Array): (crc: bigint, data: Uint8Array) => bigint {
  return (crc, data) => {
    let c = ~Number(crc);
    const n = data.length;
    let i = 0;
    for (; i + 8 <= n; i += 8) {
      const a = c ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
      c = t[1792 + (a & 0xff)] ^ t[1536 + ((a >>> 8) & 0xff)] ^ t[1280 + ((a >>> 16) & 0xff)] ^ t[1024 + (a >>> 24)] ^
        t[768 + data[i + 4]] ^ t[512 + data[i + 5]] ^ t[256 + data[i + 6]] ^ t[data[i + 7]];
    }
    for (; i < n; i++) c = (c >>> 8) ^ t[(c ^ data[i]) & 0xff];
    return BigInt(~c >>> 0);
  };
}

function update64(lo: Int32Array, hi: Int32Array): (crc: bigint, data: Uint8Array) => bigint {
  return (crc, data) => {
    const state = ~crc & 0xffffffffffffffffn;
    let l = Number(state & 0xffffffffn);
    let h = Number(state >> 32n);
    const n = data.length;
    let i = 0;
    for (; i + 8 <= n; i += 8) {
      const a = l ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
      const b = h ^ (data[i + 4] | (data[i + 5] << 8) | (data[i + 6] << 16) | (data[i + 7] << 24));
      const i7 = 1792 + (a & 0xff), i6 = 1536 + ((a >>> 8) & 0xff), i5 = 1280 + ((a >>> 16) & 0xff), i4 = 1024 + (a >>> 24);
      const i3 = 768 + (b & 0xff), i2 = 512 + ((b >>> 8) & 0xff), i1 = 256 + ((b >>> 16) & 0xff), i0 = b >>> 24;
      l = lo[i7] ^ lo[i6] ^ lo[i5] ^ lo[i4] ^ lo[i3] ^ lo[i2] ^ lo[i1] ^ lo[i0];
      h = hi[i7] ^ hi[i6] ^ hi[i5] ^ hi[i4] ^ hi[i3] ^ hi[i2] ^ hi[i1] ^ hi[i0];
    }
    for (; i < n; i++) {
      const idx = (l ^ data[i]) & 0xff;
      l = ((l >>> 8) | (h << 24)) ^ lo[idx];
      h = (h >>> 8) ^ hi[idx];
    }
    return ~((BigInt(h >>> 0) << 32n) | BigInt(l >>> 0)) & 0xffffffffffffffffn;
  };
}
