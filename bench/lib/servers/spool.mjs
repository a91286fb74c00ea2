// express-spool targets, loaded from the BUILT package entry (dist/lib/index.js), as an app would:
//   spool         spool() with no options at all: the defaults (threshold, disk rollover into
//                 os.tmpdir()/express-spool — the bench points TMPDIR into the target's directory —,
//                 64 MiB memory budget, the default `sha256`)
//   spool-sha256  spool({ sha256: true })   } the hashing pair: the difference is what
//   spool-nohash  spool({ sha256: false })  } streaming sha256 costs
//   spool-s3      spool({ rollover: s3Engine({ client, bucket, prefix }) }), the rest default

import { require, sha256Buffer, sha256File, state, uploadRoute } from './common.mjs';
import { s3Setup } from './s3.mjs';

export default function spoolTarget({ kind }) {
  const { spool, s3Engine } = require('../../../dist/lib/index.js');
  const s3 = kind === 'spool-s3' ? s3Setup(kind) : null;
  const options = {
    spool: undefined,
    'spool-sha256': { sha256: true },
    'spool-nohash': { sha256: false },
    'spool-s3': s3 && { rollover: s3Engine({ client: s3.client, bucket: s3.bucket, prefix: s3.prefix }) },
  }[kind];
  const upload = spool(options);
  const describe = async (f) => {
    let stored;
    if (f.storage === 's3') stored = await s3.record(f.key);
    else if (state.verify) stored = f.storage === 'memory' ? sha256Buffer(f.buffer) : await sha256File(f.path);
    return { size: f.size, storage: f.storage, sha256: f.sha256, stored };
  };
  return { server: uploadRoute(upload.single('file'), describe), cleanup: s3?.cleanup };
}
