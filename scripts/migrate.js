// migrate.js: move a live disk to a new home, on this host or another, with nothing lost.
//
// The node's clients (NBD exports, other parents) keep reading and writing while blockdev-mirror
// copies it onto the target; once the copy has caught up (BLOCK_JOB_READY) job-complete switches
// every user of the node over to the target in one step. Where clients write faster than the
// copy (background mode need not converge), after `deadline` seconds the job is switched to
// copy-mode write-blocking with block-job-change: client writes then go to both sides, so what
// is left to copy only shrinks.
//
// args:
//   node           the node to move; required
//   target         a file for a new local image (created by blockdev-create, overwritten if it
//                  exists; with `existing: true` an image already there is opened instead)
//   format         of the local image: qcow2 (default) or raw
//   server         or an NBD destination (another daemon's writable export of an image of the
//                  node's size): a unix socket path, HOST:PORT, or a QMP SocketAddress object
//   export         the destination's export name (with `server`)
//   reconnectDelay seconds the NBD client holds requests while the destination is away (default 0)
//   targetNode     the new node's name (default: NODE-migrated)
//   deadline       seconds the background copy may take to become ready (default 60)
//   speed          bytes per second for the copy (default: unlimited)
//
// Returns {node, targetNode, target, bytes, copyMode, readySeconds, seconds, exports}.
//
//   blockjobs run migrate.js --arg node=disk0 --arg target=/srv/fast/disk0.qcow2
//   blockjobs run migrate.js --arg node=disk0 --arg server=/run/dest/nbd.sock --arg export=disk0 --arg deadline=30

export default async function migrate(bj, args) {
  const node = args.node;
  if (typeof node !== 'string') {
    throw new bj.QmpError('GenericError', 'migrate.js needs the node to move: --arg node=NAME');
  }
  if ((args.target === undefined) === (args.server === undefined)) {
    throw new bj.QmpError('GenericError',
      'migrate.js needs one destination: --arg target=FILE, or --arg server=SOCKET --arg export=NAME');
  }
  if (args.server !== undefined && typeof args.export !== 'string') {
    throw new bj.QmpError('GenericError', "an NBD destination needs the export's name: --arg export=NAME");
  }
  const format = args.format === undefined ? 'qcow2' : args.format;
  if (format !== 'qcow2' && format !== 'raw') {
    throw new bj.QmpError('GenericError', `format must be qcow2 or raw, not ${format}`);
  }
  const deadline = args.deadline === undefined ? 60 : Number(args.deadline);
  if (!(deadline > 0)) {
    throw new bj.QmpError('GenericError', `deadline must be a positive number of seconds, not ${args.deadline}`);
  }
  const targetNode = args.targetNode === undefined ? `${node}-migrated` : String(args.targetNode);
  const started = Date.now();
  const seconds = () => Math.round((Date.now() - started) / 100) / 10;

  const source = (await bj.qmp('query-named-block-nodes')).find((n) => n['node-name'] === node);
  if (source === undefined) {
    throw new bj.QmpError('DeviceNotFound', `Cannot find node '${node}'`);
  }
  const size = source.image['virtual-size'];
  const exports = (await bj.qmp('query-block-exports')).filter((e) => e['node-name'] === node).map((e) => e.id);
  const where = args.target !== undefined
    ? `${args.target} (${format})` : `NBD export '${args.export}' at ${describe(args.server)}`;
  bj.log(`migrating ${node} (${size} bytes${exports.length ? `, exported as ${exports.join(', ')}` : ''}) to ${where}`);

  await openTarget();
  let job;
  try {
    const mirror = { device: node, target: targetNode, sync: 'full' };
    if (args.speed !== undefined) mirror.speed = Number(args.speed);
    if (args.jobId !== undefined) mirror['job-id'] = String(args.jobId);
    job = bj.job('blockdev-mirror', mirror);
    await job.started;
  } catch (e) {
    await dropTarget();
    throw e;
  }
  bj.log(`mirror ${job.id} copying ${node} to ${targetNode}`);

  let copyMode = 'background';
  let readySeconds;
  try {
    const first = await Promise.race([job.ready.then(() => 'ready'), bj.sleep(deadline * 1000).then(() => 'deadline')]);
    if (first === 'deadline') {
      const info = (await bj.qmp('query-block-jobs')).find((j) => j.device === job.id);
      const dirty = info !== undefined && info['x-dirty-bytes'] !== undefined
        ? `${info['x-dirty-bytes']} bytes still to copy` : 'still copying';
      bj.log(`not ready after ${deadline} s (${dirty}): switching ${job.id} to copy-mode write-blocking`);
      await bj.qmp('block-job-change', { id: job.id, type: 'mirror', 'copy-mode': 'write-blocking' });
      copyMode = 'write-blocking';
      await job.ready;
    }
    readySeconds = seconds();
    bj.log(`${job.id} ready after ${readySeconds} s (${copyMode}): switching ${node}'s users over to ${targetNode}`);
    await job.complete();
    await job.done;
  } catch (e) {
    if (job.status === 'concluded' || job.status === 'null') await dropTarget(); // the node is nobody's now
    throw e;
  }

  // Verify: the whole disk was copied, the target is as large, and every export moved.
  const problems = [];
  if (job.offset !== job.len) problems.push(`the job ended at ${job.offset} of ${job.len} bytes`);
  const target = (await bj.qmp('query-named-block-nodes')).find((n) => n['node-name'] === targetNode);
  if (target === undefined) {
    problems.push(`node ${targetNode} is gone`);
  } else if (target.image['virtual-size'] !== size) {
    problems.push(`${targetNode} is ${target.image['virtual-size']} bytes, ${node} ${size}`);
  }
  const after = await bj.qmp('query-block-exports');
  for (const id of exports) {
    const e = after.find((x) => x.id === id);
    if (e === undefined || e['node-name'] !== targetNode) {
      problems.push(`export ${id} is on ${e === undefined ? 'nothing' : e['node-name']}, not ${targetNode}`);
    }
  }
  if (problems.length > 0) {
    throw new bj.QmpError('GenericError', `migration of ${node} did not verify: ${problems.join('; ')}`);
  }
  bj.log(`migrated ${node} to ${targetNode} in ${seconds()} s: ${job.len} bytes copied, `
    + `${exports.length ? `exports ${exports.join(', ')} now on ${targetNode}` : 'no export to move'}`);
  return {
    node, targetNode, target: args.target !== undefined ? args.target : { server: args.server, export: args.export },
    bytes: job.len, copyMode, readySeconds, seconds: seconds(), exports,
  };

  // The target node: a new (or existing) local image, or the NBD destination under a raw node.
  async function openTarget() {
    if (args.target !== undefined) {
      const fileNode = `${targetNode}-file`;
      if (!args.existing) {
        await create({ driver: 'file', filename: args.target, size: format === 'raw' ? size : 0 });
      }
      await bj.qmp('blockdev-add', { driver: 'file', 'node-name': fileNode, filename: args.target });
      try {
        if (!args.existing && format === 'qcow2') {
          await create({ driver: 'qcow2', file: fileNode, size });
        }
        await bj.qmp('blockdev-add', { driver: format, 'node-name': targetNode, file: fileNode });
      } catch (e) {
        await bj.qmp('blockdev-del', { 'node-name': fileNode }).catch(() => {});
        throw e;
      }
    } else {
      const nbd = { driver: 'nbd', server: address(args.server), export: args.export };
      if (args.reconnectDelay !== undefined) nbd['reconnect-delay'] = Number(args.reconnectDelay);
      await bj.qmp('blockdev-add', { driver: 'raw', 'node-name': targetNode, file: nbd });
    }
    const t = (await bj.qmp('query-named-block-nodes')).find((n) => n['node-name'] === targetNode);
    if (t.image['virtual-size'] !== size) {
      await dropTarget();
      throw new bj.QmpError('GenericError',
        `the destination is ${t.image['virtual-size']} bytes, ${node} is ${size}: give it an image of the same size`);
    }
    bj.log(`target ${targetNode} open: ${t.image.filename || where}`);
  }

  async function create(options) {
    const j = bj.job('blockdev-create', { options });
    await j.done;
    await j.dismiss();
  }

  async function dropTarget() {
    await bj.qmp('blockdev-del', { 'node-name': targetNode }).catch(() => {});
    if (args.target !== undefined) await bj.qmp('blockdev-del', { 'node-name': `${targetNode}-file` }).catch(() => {});
  }

  // QMP's SocketAddress from a unix socket path, HOST:PORT, or an object given as it is.
  function address(server) {
    if (typeof server === 'object') return server;
    const s = String(server);
    const colon = s.lastIndexOf(':');
    if (!s.includes('/') && colon > 0) return { type: 'inet', host: s.slice(0, colon), port: s.slice(colon + 1) };
    return { type: 'unix', path: s };
  }

  function describe(server) {
    return typeof server === 'object' ? JSON.stringify(server) : String(server);
  }
}
