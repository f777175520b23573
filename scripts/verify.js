// verify.js: re-read the backups in the backup store and check them against their manifests.
//
// For every backup of the chosen chains: the file is in the store, sealed (not partial), of the
// size the manifest records, its SHA-256 is the one recorded when it was sealed (every byte is
// re-read), and it opens as a qcow2 image with its whole backing chain. A backup that fails any of
// these is reported with the reason; so is every later backup of its chain, which reads through it.
//
// args:
//   disk    only this disk's chains (default: every disk in the store)
//   chain   only this chain (its id: the id of its first backup)
//
// Returns {checked, ok, failed: [{disk, chain, id, file, problem}]}; the run fails (so that a
// schedule's result shows it) if any backup failed, with the same list in the error.
//
//   blockjobs run verify.js --arg disk=disk0

export default async function verify(bj, args) {
  const files = (await bj.qmp('x-backup-store-list')).files;
  const byName = new Map(files.map((f) => [f.name, f]));
  const failed = [];
  let checked = 0;
  for (const m of files.filter((f) => f.type === 'manifest' && f.name.endsWith('/manifest.json'))) {
    let manifest;
    try {
      manifest = JSON.parse((await bj.qmp('x-backup-store-read', { name: m.name })).data);
    } catch (e) {
      failed.push({ disk: null, chain: null, id: null, file: m.name, problem: `unreadable manifest: ${e.message}` });
      continue;
    }
    if (args.disk !== undefined && manifest.disk !== String(args.disk)) continue;
    if (args.chain !== undefined && manifest.chain !== String(args.chain)) continue;
    const broken = new Set();
    for (const b of manifest.backups || []) {
      checked++;
      const problem = b.parent !== null && broken.has(b.parent)
        ? `it builds on backup ${b.parent}, which failed` : await check(b);
      if (problem !== null) {
        broken.add(b.id);
        failed.push({ disk: manifest.disk, chain: manifest.chain, id: b.id, file: b.file, problem });
        bj.log(`${b.file}: FAILED: ${problem}`);
      } else {
        bj.log(`${b.file}: ok`);
      }
    }
  }
  const result = { checked, ok: checked - failed.filter((f) => f.id !== null).length, failed };
  if (failed.length > 0) {
    throw new bj.QmpError('GenericError', `${failed.length} backup(s) failed verification: `
      + failed.map((f) => `${f.file} (${f.problem})`).join('; '));
  }
  bj.log(`verified ${checked} backup(s): all ok`);
  return result;

  async function check(b) {
    const f = byName.get(b.file);
    if (f === undefined) return 'missing from the store';
    if (f.partial) return 'partial: the backup never finished';
    if (f.size !== b.size) return `${f.size} bytes, the manifest says ${b.size}`;
    const digest = await bj.qmp('x-backup-store-digest', { name: b.file });
    if (digest.sha256 !== b.sha256) return `SHA-256 ${digest.sha256} differs from the manifest's ${b.sha256}`;
    const store = await bj.qmp('x-query-backup-store');
    const node = `vf-${b.id}`;
    try {
      await bj.qmp('blockdev-add', { driver: 'qcow2', 'node-name': node, 'read-only': true,
        file: { driver: 'file', filename: `${store.dir}/${b.file}` } });
    } catch (e) {
      return `does not open as a qcow2 image: ${e.message}`;
    }
    await bj.qmp('blockdev-del', { 'node-name': node });
    return null;
  }
}
