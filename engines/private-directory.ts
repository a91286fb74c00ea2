import { chmod, lstat } from 'node:fs/promises';

/**
 * Makes sure a directory in the shared tmp is this user's own before each file, so that another local user can
 * neither read the uploads in it nor swap files under it: a real directory (not a symlink), owned by this
 * user, 0700 (tightened if it is ours and looser). Checked every time, not once: a tmp cleaner may remove it,
 * and anyone may create the name again. Another owner, or a symlink, fails the request (STORAGE_FAILED,
 * `cause` says why): give the engine or store a `directory` to put files elsewhere. A missing one passes: the
 * caller makes it, 0700, and checks it again.
 */
export async function ownPrivateDirectory(directory: string, option = "diskEngine's `directory`"): Promise<void> {
  let info;
  try {
    info = await lstat(directory);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return;
  }
  const uid = process.getuid?.();
  if (!info.isDirectory() || (uid !== undefined && info.uid !== uid)) {
    throw new Error(`${directory} is not a directory of this user's own (a symlink, or another user's): uploads are not stored there; set ${option}`);
  }
  if (process.platform !== 'win32' && (info.mode & 0o077) !== 0) await chmod(directory, 0o700);
}
