import type { ResumableContext } from '../lib/resumable/upload-store';
import { toS3Error } from './s3-errors';
import { MAX_PARTS, MIN_PART_SIZE, type StoredPart, type UploadObjects } from './resumable-s3-objects';

/** S3's largest part, for UploadPartCopy ranges. */
const MAX_PART_SIZE = 5 * 1024 ** 3;

export interface ConcatSource {
  readonly key: string;
  readonly size: number;
}

/**
 * Writes the bytes of `sources` in order as one object at `key`. Ranges of ≥ 5 MiB are UploadPartCopy
 * (server-side, no memory here); shorter pieces, which S3 cannot make parts of, are gathered into one
 * part-sized buffer reserved on `context.memory` and sent as UploadPart. All of it fitting one buffer is a
 * single PutObject. On failure the multipart upload is aborted: nothing is left at `key`.
 */
export async function concatenateObjects(
  objects: UploadObjects,
  key: string,
  sources: readonly ConcatSource[],
  partSize: number,
  context: ResumableContext,
): Promise<void> {
  const { memory, signal } = context;
  const total = sources.reduce((sum, source) => sum + source.size, 0);
  const bufferSize = Math.min(partSize, total);
  let buffer: Buffer | undefined;
  let size = 0;
  let uploadId: string | undefined;
  const parts: StoredPart[] = [];
  const number = () => {
    if (parts.length >= MAX_PARTS) throw toS3Error(new Error(`The final upload needs more than ${MAX_PARTS} parts`));
    return parts.length + 1;
  };
  const flushBuffer = async () => {
    uploadId ??= await objects.createMultipart(key);
    parts.push(await objects.uploadPart(key, uploadId, number(), buffer!.subarray(0, size)));
    size = 0;
  };
  try {
    for (const source of sources) {
      let position = 0;
      while (position < source.size) {
        const rest = source.size - position;
        if (size === 0 && rest >= MIN_PART_SIZE) {
          const length = Math.min(rest, MAX_PART_SIZE);
          uploadId ??= await objects.createMultipart(key);
          parts.push(await objects.copyPart(key, uploadId, number(), source.key, position, length));
          position += length;
          continue;
        }
        if (!buffer) {
          await memory.reserve(bufferSize, signal);
          buffer = Buffer.allocUnsafe(bufferSize);
        }
        const length = Math.min(rest, buffer.length - size);
        await objects.readInto(source.key, buffer, size, position, length, signal);
        size += length;
        position += length;
        if (size === buffer.length && size >= MIN_PART_SIZE && !(position === source.size && source === sources.at(-1))) await flushBuffer();
      }
    }
    if (uploadId === undefined) {
      await objects.put(key, buffer ? buffer.subarray(0, size) : Buffer.alloc(0));
      return;
    }
    if (size > 0) await flushBuffer();
    await objects.complete(key, uploadId, parts);
  } catch (err) {
    if (uploadId !== undefined) await objects.abort(key, uploadId).catch(() => undefined); // the first error is the one to report
    throw err;
  } finally {
    if (buffer) memory.release(buffer.length);
  }
}
