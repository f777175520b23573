// backup-policy.js: full, incremental and differential backups of live disks into the daemon's
// backup store, with checkpoints as libvirt keeps them and retention as Proxmox prunes.
//
// Each disk's backups form chains in the store (blockjobd --backup-dir DIR):
//   DISK/CHAIN/manifest.json      what each backup is: id, mode, file, parent, time, size, sha256
//   DISK/CHAIN/ID.full.qcow2      a full backup: the disk as it was at ID
//   DISK/CHAIN/ID.inc.qcow2       the clusters changed since the previous backup, over it as backing
//   DISK/CHAIN/ID.diff.qcow2      the clusters changed since the chain's full, over the full
// so `qemu-img` reads any point in time from its file. A checkpoint is a persistent dirty bitmap
// on the disk named `bj-ID` (one per backup, libvirt's scheme): the backup and the checkpoint it
// starts are made in one transaction, at one instant for all disks. Bitmap bj-ID records the writes
// from backup ID until the next checkpoint; the writes since backup X are the union of bj-X and
// every later checkpoint.
//
// args (virtnbdbackup's modes):
//   disks      node names, comma-separated (or an array); required
//   mode       full: start a new chain; inc: changes since the chain's last backup; diff: changes
//              since the chain's full (no new checkpoint); copy: a full with no checkpoint, a chain
//              of its own; auto (default): full into an empty chain or when fullEvery says so,
//              otherwise inc
//   fullEvery  with auto: a new chain when the chain's full is older than N days (a number), or
//              from another calendar 'day', 'week' (ISO, Monday to Sunday) or 'month' (UTC)
//   speed      bytes per second for each backup job
//   compress   true: compressed qcow2 clusters
//   keep-last, keep-hourly, keep-daily, keep-weekly, keep-monthly, keep-yearly: retention, with
//              Proxmox Backup Server's semantics (UTC periods). No option: keep everything. A backup
//              that a kept one depends on is always kept.
//   verify     true: after the backups, run verify.js on each chain that got one (its files re-read
//              and checked against the manifest); a failure fails the run
//   dry-run    true: say what would be backed up and pruned, change nothing
//   now        the time of this run (ISO 8601), for simulations; default: the clock
//
// Before an incremental the chain is checked as libvirt does: the checkpoints exist on the disk,
// are persistent, recording (the newest), not in use and not inconsistent (a crash leaves them
// so), every backup of the chain is in the store, sealed, and of the size the manifest says, and
// the disk has not been resized. A check that fails is logged and the disk gets a full backup. A
// backup that fails or is cancelled leaves its checkpoint where it was and no file behind; one cut
// short by a killed daemon stays marked partial in the store and the next run removes it.
//
// Returns {backups: [{disk, id, file, mode, time, size, sha256, reason}], pruned: [{disk, id, file}],
//          kept: [{disk, id, why}], dryRun}.
//
//   blockjobs run backup-policy.js --arg disks=disk0,disk1 --arg mode=auto --arg keep-daily=7 --arg keep-weekly=4

const KEEP = ['keep-last', 'keep-hourly', 'keep-daily', 'keep-weekly', 'keep-monthly', 'keep-yearly'];
const MODES = ['full', 'inc', 'diff', 'copy', 'auto'];
const EXT = { full: 'full', copy: 'full', inc: 'inc', diff: 'diff' };

export default async function backupPolicy(bj, args) {
  const disks = list(args.disks);
  if (disks.length === 0) {
    throw new bj.QmpError('GenericError', 'backup-policy.js needs the disks to back up: --arg disks=NODE[,NODE...]');
  }
  const mode = args.mode === undefined ? 'auto' : String(args.mode);
  if (!MODES.includes(mode)) {
    throw new bj.QmpError('GenericError', `mode must be one of ${MODES.join(', ')}, not '${mode}'`);
  }
  const policy = retentionPolicy(args, bj);
  const dryRun = flag(args['dry-run'] ?? args.dryRun);
  const now = args.now === undefined ? new Date() : new Date(String(args.now));
  if (Number.isNaN(now.getTime())) {
    throw new bj.QmpError('GenericError', `now must be an ISO 8601 time, not '${args.now}'`);
  }
  const id = backupId(now);
  const store = await bj.qmp('x-query-backup-store');
  bj.log(`backup ${id} of ${disks.join(', ')} (mode ${mode}${dryRun ? ', dry run' : ''}) into ${store.dir}`);

  const nodes = await bj.qmp('query-named-block-nodes');
  let files = (await bj.qmp('x-backup-store-list')).files;
  const plans = [];
  for (const disk of disks) {
    const node = nodes.find((n) => n['node-name'] === disk);
    if (node === undefined) throw new bj.QmpError('DeviceNotFound', `Cannot find node '${disk}'`);
    plans.push(await plan(bj, disk, node, mode, args.fullEvery, id, now, files));
  }
  for (const p of plans) bj.log(`${p.disk}: ${p.mode}${p.reason ? ` (${p.reason})` : ''}`);

  const result = { backups: [], pruned: [], kept: [], dryRun };
  if (dryRun) {
    for (const p of plans) {
      result.backups.push({ disk: p.disk, id, file: p.file, mode: p.mode, time: now.toISOString(), reason: p.reason });
    }
    await retention(bj, disks, policy, result, true, plans);
    return result;
  }

  for (const p of plans) await removePartials(bj, p.disk, files);
  const done = await backup(bj, plans, id, args);
  for (const p of plans) {
    const outcome = done.get(p.disk);
    if (outcome.error === undefined) {
      result.backups.push({
        disk: p.disk, id, file: p.file, mode: p.mode, time: now.toISOString(), size: outcome.size,
        sha256: outcome.sha256, reason: p.reason,
      });
    }
  }
  await retention(bj, disks, policy, result, false, plans);
  if (flag(args.verify)) result.verified = await verifyChains(bj, plans.filter((p) => done.get(p.disk).error === undefined));
  const failed = plans.filter((p) => done.get(p.disk).error !== undefined);
  if (failed.length > 0) {
    throw new bj.QmpError('GenericError', failed.map((p) => `backup of ${p.disk} failed: ${done.get(p.disk).error}`)
      .join('; ') + (result.backups.length ? `; made ${result.backups.map((b) => b.file).join(', ')}` : ''));
  }
  bj.log(`backup ${id} done: ${result.backups.map((b) => `${b.file} (${b.size} bytes)`).join(', ')}`);
  return result;
}

// ---- planning: which kind of backup each disk gets, and why --------------------------------------

async function plan(bj, disk, node, mode, fullEvery, id, now, files) {
  const size = node.image['virtual-size'];
  const bitmaps = node['dirty-bitmaps'] || [];
  const chain = await currentChain(bj, disk, files);
  const p = { disk, size, id, bitmaps: [], newCheckpoint: null, reason: null };
  let want = mode;
  if (mode === 'auto') {
    if (chain === null) {
      want = 'full';
      p.reason = 'no chain yet';
    } else if (fullDue(chain, fullEvery, now)) {
      want = 'full';
      p.reason = `fullEvery ${fullEvery}: the chain's full is from ${chain.backups[0].time}`;
    } else {
      want = 'inc';
    }
  }
  if (want === 'inc' || want === 'diff') {
    const problem = chain === null ? 'there is no chain to continue' : checkChain(chain, bitmaps, size, want, files);
    if (problem !== null) {
      bj.log(`${disk}: cannot take ${want === 'inc' ? 'an incremental' : 'a differential'} backup: ${problem}; `
        + 'taking a full backup instead');
      want = 'full';
      p.reason = problem;
    }
  }
  p.mode = want;
  if (want === 'full' || want === 'copy') {
    p.chainId = want === 'copy' ? `${id}-copy` : id;
    p.parent = null;
  } else {
    p.chainId = chain.chain;
    p.parent = sinceOf(chain, want);
    p.bitmaps = checkpointsSince(chain, p.parent, bitmaps);
  }
  p.file = `${disk}/${p.chainId}/${id}.${EXT[want]}.qcow2`;
  p.newCheckpoint = want === 'copy' || want === 'diff' ? null : `bj-${id}`;
  if (files.some((f) => f.name === p.file)) {
    throw new bj.QmpError('GenericError', `${p.file} already exists: a backup ${id} of ${disk} was already taken`);
  }
  return p;
}

// The chain an incremental continues: the newest one that is not a copy.
async function currentChain(bj, disk, files) {
  const manifests = files.filter((f) => f.type === 'manifest' && f.name.startsWith(`${disk}/`)
    && f.name.endsWith('/manifest.json'));
  const chains = [];
  for (const m of manifests) {
    const c = await readManifest(bj, m.name);
    if (c !== null && c.backups.length > 0 && c.backups[0].mode !== 'copy') chains.push(c);
  }
  chains.sort((a, b) => (a.backups[0].time < b.backups[0].time ? 1 : -1));
  return chains.length ? chains[0] : null;
}

// What makes an incremental impossible, in words, or null (libvirt's checks, and the store's).
function checkChain(chain, bitmaps, size, want, files) {
  if (chain.virtualSize !== size) return `the disk was resized (${chain.virtualSize} to ${size} bytes)`;
  for (const b of chain.backups) {
    const f = files.find((x) => x.name === b.file);
    if (f === undefined) return `backup ${b.file} of the chain is missing from the store`;
    if (f.partial) return `backup ${b.file} of the chain is partial`;
    if (f.size !== b.size) return `backup ${b.file} is ${f.size} bytes, the manifest says ${b.size}`;
  }
  const since = sinceOf(chain, want);
  if (!since.checkpoint) return `backup ${since.id} has no checkpoint`;
  const wanted = checkpointsSince(chain, since, bitmaps);
  for (const name of wanted) {
    const b = bitmaps.find((x) => x.name === name);
    if (b === undefined) return `checkpoint bitmap ${name} is not on the disk`;
    if (!b.persistent) return `checkpoint bitmap ${name} is not persistent`;
    if (b.inconsistent) return `checkpoint bitmap ${name} is inconsistent (the daemon was not stopped cleanly)`;
    if (b.busy) return `checkpoint bitmap ${name} is in use`;
  }
  const newest = bitmaps.find((x) => x.name === wanted[wanted.length - 1]);
  if (!newest.recording) return `checkpoint bitmap ${newest.name} is not recording`;
  return null;
}

// The checkpoints whose union is every write since a backup: its own and all later ones of the
// chain, plus any left by a run that failed after making its checkpoint (they are newer).
function checkpointsSince(chain, since, bitmaps) {
  const names = chain.backups.filter((b) => b.checkpoint && b.time >= since.time).map((b) => b.checkpoint);
  const first = `bj-${since.id}`;
  for (const b of bitmaps) {
    if (b.name.startsWith('bj-') && !b.name.startsWith('bj-tmp-') && b.name > first && !names.includes(b.name)) {
      names.push(b.name);
    }
  }
  return names.sort();
}

// The backup whose changes since an incremental or differential copies, and that its file goes on
// top of: for inc the newest backup that is not a diff, for diff the chain's full.
function sinceOf(chain, want) {
  if (want === 'diff') return chain.backups[0];
  const line = chain.backups.filter((b) => b.mode !== 'diff');
  return line[line.length - 1];
}

function fullDue(chain, every, now) {
  if (every === undefined || every === null || every === '') return false;
  const full = new Date(chain.backups[0].time);
  if (/^\d+(\.\d+)?$/.test(String(every))) return now - full >= Number(every) * 86400000;
  const key = { day: dayKey, daily: dayKey, week: weekKey, weekly: weekKey, month: monthKey, monthly: monthKey }[every];
  if (key === undefined) return false;
  return key(full) !== key(now);
}

// ---- the backups: one transaction for all disks, then each job's outcome ------------------------

async function backup(bj, plans, id, args) {
  const actions = [];
  const outcomes = new Map();
  const made = [];
  try {
    for (const p of plans) await prepare(bj, p, id, args, actions, made);
  } catch (e) {
    await undoPrepared(bj, made);
    throw e;
  }
  const ends = new Map(plans.map((p) => [p.job, deferred()]));
  const stop = bj.events.on('*', (e) => {
    const d = e.data || {};
    if (e.event === 'BLOCK_JOB_COMPLETED' && ends.has(d.device)) {
      ends.get(d.device).resolve(d.error === undefined ? null : d.error);
    } else if (e.event === 'BLOCK_JOB_CANCELLED' && ends.has(d.device)) {
      ends.get(d.device).resolve('cancelled');
    }
  });
  try {
    try {
      await bj.qmp('transaction', { actions });
    } catch (e) {
      await undoPrepared(bj, made);
      throw e;
    }
    for (const p of plans) {
      const error = await ends.get(p.job).promise;
      outcomes.set(p.disk, await finish(bj, p, error));
    }
  } finally {
    stop();
  }
  return outcomes;
}

// A disk's target image and node, and its transaction actions.
async function prepare(bj, p, id, args, actions, made) {
  const created = await bj.qmp('x-backup-store-create', { name: p.file, size: p.size,
    ...(p.parent ? { backing: p.parent.file } : {}) });
  made.push(p);
  p.target = `bj-target-${p.disk}`;
  await bj.qmp('blockdev-add', { driver: 'qcow2', 'node-name': p.target,
    file: { driver: 'file', filename: created.filename } });
  p.job = `bj-backup-${p.disk}`;
  const job = { type: 'blockdev-backup', data: { 'job-id': p.job, device: p.disk, target: p.target, 'auto-dismiss': true } };
  if (args.speed !== undefined) job.data.speed = Number(args.speed);
  if (flag(args.compress)) job.data.compress = true;
  if (p.mode === 'inc' || p.mode === 'diff') {
    p.tmp = `bj-tmp-${id}`;
    actions.push({ type: 'block-dirty-bitmap-add', data: { node: p.disk, name: p.tmp, disabled: true } });
    actions.push({ type: 'block-dirty-bitmap-merge', data: { node: p.disk, target: p.tmp, bitmaps: p.bitmaps } });
    Object.assign(job.data, { sync: 'bitmap', bitmap: p.tmp, 'bitmap-mode': 'never' });
  } else {
    job.data.sync = 'full';
  }
  if (p.newCheckpoint !== null) {
    if (p.mode === 'inc') {
      const newest = p.bitmaps[p.bitmaps.length - 1];
      actions.push({ type: 'block-dirty-bitmap-disable', data: { node: p.disk, name: newest } });
      p.disabled = newest;
    }
    actions.push({ type: 'block-dirty-bitmap-add', data: { node: p.disk, name: p.newCheckpoint, persistent: true } });
  }
  actions.push(job);
}

async function undoPrepared(bj, made) {
  for (const p of made) {
    if (p.target) await dropTarget(bj, p);
    await bj.qmp('x-backup-store-delete', { name: p.file }).catch(() => {});
  }
}

// After a disk's job: seal the backup and record it, or undo everything it changed.
async function finish(bj, p, error) {
  await dropTarget(bj, p);
  if (p.tmp) await bj.qmp('block-dirty-bitmap-remove', { node: p.disk, name: p.tmp }).catch(() => {});
  if (error !== null) {
    bj.log(`${p.disk}: backup failed: ${error}; the chain stays where it was`);
    await bj.qmp('x-backup-store-delete', { name: p.file }).catch((e) => bj.log(`${p.disk}: ${e.message}`));
    if (p.newCheckpoint !== null) {
      // The writes since this backup's instant are in the new checkpoint: give them back.
      if (p.disabled) {
        await bj.qmp('block-dirty-bitmap-merge', { node: p.disk, target: p.disabled, bitmaps: [p.newCheckpoint] });
        await bj.qmp('block-dirty-bitmap-enable', { node: p.disk, name: p.disabled });
      }
      await bj.qmp('block-dirty-bitmap-remove', { node: p.disk, name: p.newCheckpoint });
    }
    return { error };
  }
  const digest = await bj.qmp('x-backup-store-seal', { name: p.file });
  const manifestName = `${p.disk}/${p.chainId}/manifest.json`;
  const manifest = p.mode === 'full' || p.mode === 'copy'
    ? { version: 1, disk: p.disk, chain: p.chainId, virtualSize: p.size, backups: [] }
    : await readManifest(bj, manifestName);
  manifest.backups.push({
    id: p.id, mode: p.mode, file: p.file, parent: p.parent ? p.parent.id : null, time: isoOf(p.id),
    checkpoint: p.newCheckpoint, size: digest.size, sha256: digest.sha256,
  });
  await bj.qmp('x-backup-store-write', { name: manifestName, data: JSON.stringify(manifest, null, 2) });
  if (p.mode === 'full') {
    // A new chain: the old chain's checkpoints are of no use any more.
    const node = (await bj.qmp('query-named-block-nodes')).find((n) => n['node-name'] === p.disk);
    for (const b of node['dirty-bitmaps'] || []) {
      if (b.name.startsWith('bj-') && b.name !== p.newCheckpoint) {
        await bj.qmp('block-dirty-bitmap-remove', { node: p.disk, name: b.name }).catch(() => {});
      }
    }
  }
  bj.log(`${p.disk}: ${p.mode} backup ${p.file}: ${digest.size} bytes, sha256 ${digest.sha256.slice(0, 16)}...`);
  return digest;
}

async function dropTarget(bj, p) {
  await bj.qmp('blockdev-del', { 'node-name': p.target }).catch(() => {});
}

// Backups a killed daemon left half-written: they are not in any manifest; nothing depends on them.
async function removePartials(bj, disk, files) {
  for (const f of files) {
    if (f.partial && f.name.startsWith(`${disk}/`)) {
      bj.log(`${disk}: removing ${f.name}, a backup that did not finish`);
      await bj.qmp('x-backup-store-delete', { name: f.name });
    }
  }
}

// verify.js on the chain of each backup just made, each as a workflow of its own.
async function verifyChains(bj, plans) {
  const out = [];
  for (const p of plans) {
    const id = `${bj.workflow.id}-verify-${p.disk}`;
    const end = bj.events.next('WORKFLOW_FINISHED', { id });
    await bj.qmp('workflow-run', { script: 'verify.js', id, args: { disk: p.disk, chain: p.chainId } });
    const e = (await end).data;
    out.push({ disk: p.disk, chain: p.chainId, ok: e.state === 'completed', ...(e.error ? { error: e.error.desc } : {}) });
    if (e.state !== 'completed') {
      throw new bj.QmpError('GenericError', `verification of ${p.disk}'s chain ${p.chainId} failed: ${e.error.desc}`);
    }
  }
  return out;
}

// ---- retention ----------------------------------------------------------------------------------

async function retention(bj, disks, policy, result, dryRun, plans) {
  const files = (await bj.qmp('x-backup-store-list')).files;
  for (const disk of disks) {
    const chains = [];
    for (const m of files.filter((f) => f.type === 'manifest' && f.name.startsWith(`${disk}/`)
      && f.name.endsWith('/manifest.json'))) {
      const c = await readManifest(bj, m.name);
      if (c !== null) chains.push({ manifest: m.name, ...c });
    }
    const all = chains.flatMap((c) => c.backups.map((b) => ({ ...b, chain: c })));
    if (dryRun) {
      const p = plans.find((x) => x.disk === disk);
      all.push({ id: p.id, time: isoOf(p.id), file: p.file, planned: true, mode: p.mode,
        parent: p.parent ? p.parent.id : null, chain: { chain: p.chainId, backups: [] } });
    }
    const marks = prune(all.map((b) => ({ id: b.id, time: b.time })), policy);
    // A kept backup keeps everything under it.
    const byId = new Map(all.map((b) => [b.id, b]));
    for (const b of all) {
      if (marks.get(b.id) !== 'keep') continue;
      for (let up = b.parent && byId.get(b.parent); up; up = up.parent && byId.get(up.parent)) {
        if (marks.get(up.id) !== 'keep') {
          marks.set(up.id, 'keep');
          result.kept.push({ disk, id: up.id, why: `backup ${b.id} depends on it` });
        }
      }
    }
    const doomed = all.filter((b) => marks.get(b.id) !== 'keep' && !b.planned);
    if (doomed.length === 0) continue;
    for (const b of doomed) bj.log(`${disk}: retention ${dryRun ? 'would remove' : 'removes'} ${b.file} (${b.time})`);
    if (dryRun) {
      for (const b of doomed) result.pruned.push({ disk, id: b.id, file: b.file });
      continue;
    }
    for (const c of chains) {
      const gone = c.backups.filter((b) => marks.get(b.id) !== 'keep');
      if (gone.length === 0) continue;
      // Newest first: an image is deleted only once nothing in the store backs onto it.
      for (const b of [...gone].reverse()) {
        await bj.qmp('x-backup-store-delete', { name: b.file });
        result.pruned.push({ disk, id: b.id, file: b.file });
      }
      const left = c.backups.filter((b) => marks.get(b.id) === 'keep');
      if (left.length === 0) {
        await bj.qmp('x-backup-store-delete', { name: c.manifest });
      } else {
        const manifest = { version: c.version, disk: c.disk, chain: c.chain, virtualSize: c.virtualSize, backups: left };
        await bj.qmp('x-backup-store-write', { name: c.manifest, data: JSON.stringify(manifest, null, 2) });
      }
    }
  }
}

/**
 * Proxmox Backup Server's prune: which backups a policy keeps. Backups are sorted newest first;
 * each option in turn (last, hourly, daily, weekly, monthly, yearly) keeps the newest backup of
 * each of its next N periods (UTC) that no earlier option already covers; a period without
 * backups does not count. A policy that keeps nothing keeps everything (never read as "delete
 * all").
 *
 * @param backups [{id, time}] with time an ISO 8601 string
 * @param policy  {'keep-last': N, 'keep-daily': N, ...}
 * @returns Map from id to 'keep' or 'remove'
 */
export function prune(backups, policy) {
  const sorted = [...backups].sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0));
  const marks = new Map();
  const keepsSomething = KEEP.some((k) => Number(policy[k] || 0) > 0);
  if (!keepsSomething) {
    for (const b of sorted) marks.set(b.id, 'keep');
    return marks;
  }
  const periods = {
    'keep-last': (d) => d.toISOString(),
    'keep-hourly': (d) => `${dayKey(d)}/${pad(d.getUTCHours())}`,
    'keep-daily': dayKey,
    'keep-weekly': weekKey,
    'keep-monthly': monthKey,
    'keep-yearly': (d) => String(d.getUTCFullYear()),
  };
  for (const option of KEEP) {
    const n = Number(policy[option] || 0);
    if (n <= 0) continue;
    const key = periods[option];
    const covered = new Set(sorted.filter((b) => marks.get(b.id) === 'keep').map((b) => key(new Date(b.time))));
    const chosen = new Set();
    for (const b of sorted) {
      if (marks.has(b.id)) continue;
      const k = key(new Date(b.time));
      if (covered.has(k)) continue;
      if (!chosen.has(k)) {
        if (chosen.size >= n) break;
        chosen.add(k);
        marks.set(b.id, 'keep');
      } else {
        marks.set(b.id, 'remove');
      }
    }
  }
  for (const b of sorted) if (!marks.has(b.id)) marks.set(b.id, 'remove');
  return marks;
}

function retentionPolicy(args, bj) {
  const policy = {};
  for (const k of KEEP) {
    const v = args[k] ?? args[camel(k)];
    if (v === undefined) continue;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) {
      throw new bj.QmpError('GenericError', `${k} must be a whole number of backups, not '${v}'`);
    }
    policy[k] = n;
  }
  return policy;
}

// ---- small things -------------------------------------------------------------------------------

async function readManifest(bj, name) {
  try {
    const m = JSON.parse((await bj.qmp('x-backup-store-read', { name })).data);
    return Array.isArray(m.backups) ? m : null;
  } catch (e) {
    bj.log(`cannot read ${name}: ${e.message}; its chain is ignored`);
    return null;
  }
}

function backupId(d) {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

function isoOf(id) {
  return `${id.slice(0, 4)}-${id.slice(4, 6)}-${id.slice(6, 8)}T${id.slice(9, 11)}:${id.slice(11, 13)}:${id.slice(13, 15)}Z`;
}

function dayKey(d) {
  return `${d.getUTCFullYear()}/${pad(d.getUTCMonth() + 1)}/${pad(d.getUTCDate())}`;
}

function monthKey(d) {
  return `${d.getUTCFullYear()}/${pad(d.getUTCMonth() + 1)}`;
}

// ISO 8601 week: weeks start on Monday; week 1 holds the year's first Thursday.
function weekKey(d) {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const dow = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - dow); // the Thursday of this week decides its year
  const year = t.getUTCFullYear();
  const week = Math.ceil(((t - Date.UTC(year, 0, 1)) / 86400000 + 1) / 7);
  return `${year}/${pad(week)}`;
}

function pad(n) {
  return String(n).padStart(2, '0');
}

function camel(k) {
  return k.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
}

function list(v) {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v.map(String);
  return String(v).split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

function flag(v) {
  return v === true || v === 'true' || v === 'on' || v === 'yes';
}

function deferred() {
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  return { promise, resolve };
}
