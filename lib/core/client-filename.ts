/**
 * The last path segment of a client's filename, as busboy reduces it unless `preservePath` is on: a
 * filename is the client's word, and `../../x` or `C:\x` must not read as a path. `.` and `..` become ''.
 */
export function basename(path: string): string {
  const cut = Math.max(path.lastIndexOf('/'), path.lastIndexOf('\\'));
  const base = cut === -1 ? path : path.slice(cut + 1);
  return base === '.' || base === '..' ? '' : base;
}
