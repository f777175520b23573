// restore.js: rebuild a disk as it was at one backup, from the backup store into a new image.
//
// The backup's file in the store reads, through its backing files, as the whole disk at that
// point in time; this opens it read-only and copies it with a full backup job into a new qcow2
// (or raw) image at `target`, so the restored image stands alone (no backing file). With
// `export` the restored node stays open and is served over NBD under that name once the copy is
// done; otherwise it is closed, ready for qemu-img or a VM.
//
// args:
//   disk     the disk (node name) whose backups to look in; required
//   backup   the backup's id (as backup-policy.js returns and `blockjobs backups` lists); required
//   target   the new image's file name; required (an existing file is refused)
//   format   qcow2 (default) or raw
//   export   optional: an NBD export name for the restored disk (needs a running NBD server)
//   speed    optional: bytes per second for the copy
//   live     true (with export): serve the disk at once: the new image starts as an overlay of the
//            backup, exported, and block-stream pulls the data in while clients use it
//
// Returns {disk, backup, time, mode, source, target, bytes}.
//
//   blockjobs run restore.js --arg disk=disk0 --arg backup=20261103T020000Z --arg target=/srv/restore/disk0.qcow2

export default async function restore(bj, args) {
  for (const k of ['disk', 'backup', 'target']) {
    if (args[k] === undefined) {
      throw new bj.QmpError('GenericError', `restore.js needs --arg ${k}=...`);
    }
  }
  const disk = String(args.disk);
  const id = String(args.backup);
  const format = args.format === undefined ? 'qcow2' : String(args.format);
  if (format !== 'qcow2' && format !== 'raw') {
    throw new bj.QmpError('GenericError', `format must be qcow2 or raw, not ${format}`);
  }
  const store = await bj.qmp('x-query-backup-store');
  const files = (await bj.qmp('x-backup-store-list')).files;
  let found = null;
  for (const m of files.filter((f) => f.type === 'manifest' && f.name.startsWith(`${disk}/`))) {
    const manifest = JSON.parse((await bj.qmp('x-backup-store-read', { name: m.name })).data);
    const b = (manifest.backups || []).find((x) => x.id === id);
    if (b !== undefined) found = { manifest, backup: b };
  }
  if (found === null) {
    throw new bj.QmpError('GenericError', `disk ${disk} has no backup ${id} in ${store.dir}; `
      + 'blockjobs backups lists the ones it has');
  }
  const b = found.backup;
  const source = `${store.dir}/${b.file}`;
  const size = found.manifest.virtualSize;
  bj.log(`restoring ${disk} as of ${b.time} (${b.mode} backup ${b.file}) into ${args.target}`);

  const src = `rs-${id}`; // node names: at most 31 characters, as QEMU allows
  const tgt = `rt-${id}`;
  if (flag(args.live)) return liveRestore();
  await bj.qmp('blockdev-add', { driver: 'qcow2', 'node-name': src, 'read-only': true,
    file: { driver: 'file', filename: source } });
  try {
    await create({ driver: 'file', filename: String(args.target), size: format === 'raw' ? size : 0 }, true);
    await bj.qmp('blockdev-add', { driver: 'file', 'node-name': `${tgt}-f`, filename: String(args.target) });
    if (format === 'qcow2') await create({ driver: 'qcow2', file: `${tgt}-f`, size });
    await bj.qmp('blockdev-add', { driver: format, 'node-name': tgt, file: `${tgt}-f` });
    const job = { device: src, target: tgt, sync: 'full' };
    if (args.speed !== undefined) job.speed = Number(args.speed);
    const j = bj.job('blockdev-backup', job);
    await j.done;
  } catch (e) {
    await bj.qmp('blockdev-del', { 'node-name': tgt }).catch(() => {});
    await bj.qmp('blockdev-del', { 'node-name': `${tgt}-f` }).catch(() => {});
    await bj.qmp('blockdev-del', { 'node-name': src }).catch(() => {});
    throw e;
  }
  await bj.qmp('blockdev-del', { 'node-name': src });
  if (args.export !== undefined) {
    await bj.qmp('block-export-add', { type: 'nbd', id: String(args.export), 'node-name': tgt, name: String(args.export),
      writable: true });
    bj.log(`restored ${disk} as of ${b.time}: ${args.target}, exported as ${args.export}`);
  } else {
    await bj.qmp('blockdev-del', { 'node-name': tgt });
    await bj.qmp('blockdev-del', { 'node-name': `${tgt}-f` });
    bj.log(`restored ${disk} as of ${b.time}: ${args.target}`);
  }
  return { disk, backup: id, time: b.time, mode: b.mode, source: b.file, target: String(args.target), bytes: size,
    exported: args.export !== undefined ? String(args.export) : null };

  // Live: the new image starts as an overlay of the backup, exported at once (its reads fall
  // through to the backup until their data is there), while block-stream pulls everything in;
  // then the image stands alone.
  async function liveRestore() {
    if (args.export === undefined) {
      throw new bj.QmpError('GenericError', 'a live restore serves the disk while it restores: give --arg export=NAME');
    }
    if (format !== 'qcow2') {
      throw new bj.QmpError('GenericError', 'a live restore writes a qcow2 image (it starts as an overlay of the backup)');
    }
    await create({ driver: 'file', filename: String(args.target), size: 0 }, true);
    await bj.qmp('blockdev-add', { driver: 'file', 'node-name': `${tgt}-f`, filename: String(args.target) });
    await create({ driver: 'qcow2', file: `${tgt}-f`, size, 'backing-file': source, 'backing-fmt': 'qcow2' });
    await bj.qmp('blockdev-add', { driver: 'qcow2', 'node-name': tgt, file: `${tgt}-f` });
    await bj.qmp('block-export-add', { type: 'nbd', id: String(args.export), 'node-name': tgt, name: String(args.export),
      writable: true });
    bj.log(`${args.target} is exported as ${args.export}; streaming the rest of ${b.file} into it`);
    const stream = { device: tgt };
    if (args.speed !== undefined) stream.speed = Number(args.speed);
    const j = bj.job('block-stream', stream);
    await j.done;
    bj.log(`restored ${disk} as of ${b.time}: ${args.target}, exported as ${args.export}, no longer needs the backup`);
    return { disk, backup: id, time: b.time, mode: b.mode, source: b.file, target: String(args.target), bytes: size,
      exported: String(args.export), live: true };
  }

  async function create(options, mustBeNew) {
    if (mustBeNew) {
      // blockdev-create would truncate an existing file: a restore never overwrites anything. A
      // file that opens exists.
      const probe = `${tgt}-p`;
      const exists = await bj.qmp('blockdev-add', { driver: 'file', 'node-name': probe, filename: options.filename,
        'read-only': true }).then(() => true, () => false);
      if (exists) {
        await bj.qmp('blockdev-del', { 'node-name': probe });
        throw new bj.QmpError('GenericError', `${options.filename} already exists; a restore writes a new image only`);
      }
    }
    const j = bj.job('blockdev-create', { options });
    await j.done;
    await j.dismiss();
  }
}

function flag(v) {
  return v === true || v === 'true' || v === 'on' || v === 'yes';
}
