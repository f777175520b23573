// compact-chain.js: keep a backing chain at most `depth` images deep.
//
// Each snapshot adds a layer; reads walk down the chain, so deep chains get slow and fragile.
// This policy merges the oldest snapshot layers into the base image with block-commit (in safe
// mode where the daemon offers it: the base is never left half-written), or, with
// `stream: true`, pulls the newest snapshot layers up into the active image with block-stream.
// Either way the guest's view of the disk does not change.
//
// args:
//   node     the active (top) node of the chain; required
//   depth    how many images the chain may have, the active one and the base included (default 3)
//   stream   true: stream into the active image instead of committing into the base (default false)
//   speed    bytes per second for the job (default: unlimited)
//   dryRun   true: only say what would be done
//
// Returns {before, after, actions}: the chain's depth before and after, and the jobs run.
//
//   blockjobs run compact-chain.js --arg node=disk0 --arg depth=3

export default async function compactChain(bj, args) {
  const node = args.node;
  if (typeof node !== 'string') {
    throw new bj.QmpError('GenericError', "compact-chain.js needs the chain's active node: --arg node=NAME");
  }
  const depth = args.depth === undefined ? 3 : Number(args.depth);
  if (!Number.isInteger(depth) || depth < 2) {
    throw new bj.QmpError('GenericError', `depth must be an integer of at least 2, not ${args.depth}`);
  }

  const chain = await bj.chain(node);
  bj.log(`chain of ${node}: ${chain.length} images: ${chain.map((l) => l.node || l.file).join(' -> ')}`);
  if (chain.length <= depth) {
    bj.log(`nothing to do: ${chain.length} images is within the limit of ${depth}`);
    return { before: chain.length, after: chain.length, actions: [] };
  }
  const excess = chain.length - depth;
  for (const layer of chain) {
    if (layer.node === null) {
      throw new bj.QmpError('GenericError', `image ${layer.file} has no node name; open the chain with named nodes`);
    }
  }

  const common = args.speed === undefined ? {} : { speed: Number(args.speed) };
  let command;
  let jobArgs;
  if (args.stream) {
    // Layers 1..excess (just under the active image) are pulled into it; layer excess+1 becomes its backing.
    const base = chain[excess + 1];
    command = 'block-stream';
    jobArgs = { ...common, device: node, 'base-node': base.node };
    bj.log(`streaming ${chain.slice(1, excess + 1).map((l) => l.node).join(', ')} into ${node}`);
  } else {
    // The oldest layers above the base are merged into it.
    const base = chain[chain.length - 1];
    const top = chain[chain.length - 1 - excess];
    command = 'block-commit';
    jobArgs = { ...common, device: node, 'top-node': top.node, 'base-node': base.node };
    if (await supports('block-commit', 'x-safe')) {
      jobArgs['x-safe'] = true;
    }
    bj.log(`committing ${chain.slice(chain.length - 1 - excess, chain.length - 1).map((l) => l.node).join(', ')} `
      + `into ${base.node}${jobArgs['x-safe'] ? ' (safe mode)' : ''}`);
  }

  const action = { command, arguments: jobArgs };
  if (args.dryRun) {
    bj.log('dry run: nothing changed');
    return { before: chain.length, after: chain.length, actions: [action] };
  }
  const job = bj.job(command, jobArgs);
  await job.done;
  bj.log(`${command} ${job.id} done: ${job.len} bytes`);
  const after = await bj.chain(node);
  bj.log(`chain of ${node} now: ${after.map((l) => l.node || l.file).join(' -> ')}`);
  return { before: chain.length, after: after.length, actions: [{ ...action, job: job.id }] };

  // Whether `command` takes the argument `member`, from the daemon's QMP schema.
  async function supports(commandName, member) {
    const schema = await bj.qmp('query-qmp-schema');
    const cmd = schema.find((e) => e['meta-type'] === 'command' && e.name === commandName);
    if (cmd === undefined) return false;
    const argType = schema.find((e) => e.name === cmd['arg-type']);
    return argType !== undefined && (argType.members || []).some((m) => m.name === member);
  }
}
