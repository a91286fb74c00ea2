/**
 * SigV4 signs an S3 request's body by hashing it (`x-amz-content-sha256`) whenever the body is a Buffer, as
 * the engines' parts are: one more sha256 pass over every byte uploaded (about 0.8 CPU s/GB on the bench's
 * machine, bench/README.md "Session 13"). Over HTTPS, TLS already protects the bytes on the way, so there the
 * body goes unsigned (`UNSIGNED-PAYLOAD`; the headers, checksums among them, stay signed), as botocore does by
 * default and as the AWS SDK does for streams. Over plain HTTP the body stays signed: there the signature is
 * what catches bytes altered on the way.
 */

const SHA256_HEADER = 'x-amz-content-sha256';

interface BuildArgs {
  readonly request?: { protocol?: string; headers?: Record<string, string> };
}
type Handler = (args: BuildArgs) => Promise<unknown>;

const unsignedOverHttps = (next: Handler): Handler => (args) => {
  const request = args.request;
  if (request?.headers && /^https:?$/i.test(request.protocol ?? '') && !Object.keys(request.headers).some((name) => name.toLowerCase() === SHA256_HEADER)) {
    request.headers[SHA256_HEADER] = 'UNSIGNED-PAYLOAD';
  }
  return next(args);
};

/** Marks a command that carries file bytes (PutObject, UploadPart): its body is not hashed over HTTPS. */
export function bytesCommand<C extends { middlewareStack: { add(...args: never[]): unknown } }>(command: C): C {
  command.middlewareStack.add(unsignedOverHttps as never, { step: 'build', name: 'expressSpoolUnsignedPayload', override: true } as never);
  return command;
}
