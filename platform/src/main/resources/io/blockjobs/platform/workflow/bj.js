// The `bj` object a workflow receives: the only door from a script to the daemon.
// Evaluated once per run as a function of the host bridge, which trades in JSON strings only,
// so no host object ever reaches the script. Everything here runs on the workflow's thread.
(function (host) {
  'use strict';

  /** A QMP error: `class` is QEMU's error class (GenericError, DeviceNotFound, ...). */
  class QmpError extends Error {
    constructor(errorClass, message) {
      super(message);
      this.name = 'QmpError';
      this.class = errorClass;
    }
  }

  function deferred() {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    promise.catch(() => {}); // a rejection nobody awaits is not an error of the workflow
    return { promise, resolve, reject };
  }

  // The daemon takes a bounded number of calls in flight from a run; more wait here, in the
  // script's own heap, oldest first, and go out as replies come back.
  const maxInFlight = host.maxInFlight();
  let inFlight = 0;
  let waiting = [];
  let next = 0;

  // `job`: the id of the job this command starts (bj.job), which the run then owns.
  function send(command, args, job) {
    if (typeof command !== 'string') {
      return Promise.reject(new TypeError('bj.qmp(command, args): command must be a string'));
    }
    const d = deferred();
    const call = { command, json: args === undefined ? '' : JSON.stringify(args), job: job === undefined ? null : job, d };
    if (inFlight < maxInFlight) dispatch(call); else waiting.push(call);
    return d.promise;
  }

  function dispatch(call) {
    const refused = host.qmp(call.command, call.json, (error, result) => {
      inFlight--;
      if (next < waiting.length) {
        const w = waiting[next];
        waiting[next++] = undefined;
        if (next === waiting.length) { waiting = []; next = 0; }
        dispatch(w);
      }
      if (error !== null) {
        const e = JSON.parse(error);
        call.d.reject(new QmpError(e.class, e.desc));
      } else {
        call.d.resolve(JSON.parse(result));
      }
    }, call.job);
    if (refused === null) inFlight++; else call.d.reject(new QmpError('GenericError', refused));
  }

  const qmp = (command, args) => send(command, args);

  // Event listeners: each is {name, match(data), fn(event)}; a listener returning true is removed.
  const listeners = new Set();

  function matches(filter, data) {
    if (filter === undefined || filter === null) return true;
    if (typeof filter === 'function') return filter(data);
    for (const key of Object.keys(filter)) {
      if (data === null || data[key] !== filter[key]) return false;
    }
    return true;
  }

  host.subscribe((name, data, timestamp) => {
    const event = { event: name, data: data === '' ? {} : JSON.parse(data), timestamp };
    for (const l of [...listeners]) {
      if (l.name === name || l.name === '*') {
        let done;
        try {
          done = l.fn(event);
        } catch (e) {
          listeners.delete(l);
          if (l.fail) l.fail(e);
          continue;
        }
        if (done) listeners.delete(l);
      }
    }
  });

  const events = {
    /** The next event called `name` ('*' for any) whose data matches `filter` (an object or a predicate). */
    next(name, filter) {
      const d = deferred();
      listeners.add({
        name,
        fn: (event) => {
          if (!matches(filter, event.data)) return false;
          d.resolve(event);
          return true;
        },
        fail: d.reject,
      });
      return d.promise;
    },
    /** Calls `fn(event)` for every event called `name` until the returned function is called. */
    on(name, fn) {
      const l = { name, fn: (event) => { fn(event); return false; } };
      listeners.add(l);
      return () => listeners.delete(l);
    },
  };

  /** A job started by bj.job: its status follows JOB_STATUS_CHANGE; `ready` and `done` are promises. */
  class Job {
    constructor(id, command) {
      this.id = id;
      this.type = command;
      this.status = 'undefined';
      this.offset = 0;
      this.len = 0;
      this.error = undefined;
      this._ready = deferred();
      this._done = deferred();
      this._waits = [];
      this.ready = this._ready.promise;
      this.done = this._done.promise;
      // Events that come before the daemon accepted the command wait here: they are this job's
      // only if the command succeeds (its id may belong to another client's job).
      this._early = [];
      this._unlisten = events.on('*', (e) => (this._early !== null ? this._early.push(e) : this._event(e)));
    }

    _accepted() {
      const early = this._early;
      this._early = null;
      for (const e of early) this._event(e);
    }

    _refused(e) {
      this._early = null;
      this._unlisten();
      this._finished = true;
      this._startError = e;
      this._ready.reject(e);
      this._done.reject(e);
    }

    _event(e) {
      const d = e.data;
      if (e.event === 'JOB_STATUS_CHANGE' && d.id === this.id) {
        this.status = d.status;
        if (d.status === 'aborting') this._aborted = true;
        for (const w of this._waits.filter((w) => w.status === d.status)) w.resolve(this);
        this._waits = this._waits.filter((w) => w.status !== d.status);
        if (d.status === 'concluded' || d.status === 'null') this._finish();
        if (d.status === 'null') this._unlisten();
        return;
      }
      if (d.device !== this.id) return;
      if (d.offset !== undefined) { this.offset = d.offset; this.len = d.len; }
      if (e.event === 'BLOCK_JOB_READY') {
        this._ready.resolve(this);
      } else if (e.event === 'BLOCK_JOB_COMPLETED') {
        this._outcome = d.error === undefined ? null : new QmpError('GenericError', `Job '${this.id}' failed: ${d.error}`);
        this.error = d.error;
      } else if (e.event === 'BLOCK_JOB_CANCELLED') {
        const err = new QmpError('GenericError', `Job '${this.id}' was cancelled`);
        err.name = 'JobCancelled';
        this._outcome = err;
      }
    }

    // At 'concluded' the job's work is over. Block jobs told their outcome in BLOCK_JOB_COMPLETED
    // or BLOCK_JOB_CANCELLED; for other jobs (blockdev-create) query-jobs has it.
    async _finish() {
      if (this._finished) return;
      this._finished = true;
      let outcome = this._outcome === undefined ? null : this._outcome;
      if (this._outcome === undefined && this._aborted) {
        const info = (await qmp('query-jobs')).find((j) => j.id === this.id);
        this.error = info !== undefined && info.error !== undefined ? info.error : 'aborted';
        outcome = new QmpError('GenericError', `Job '${this.id}' failed: ${this.error}`);
      }
      const notReady = outcome || new QmpError('GenericError', `Job '${this.id}' ended without becoming ready`);
      this._ready.reject(notReady);
      for (const w of this._waits.filter((w) => w.status !== 'null')) w.reject(notReady);
      this._waits = this._waits.filter((w) => w.status === 'null');
      if (outcome === null) this._done.resolve(this); else this._done.reject(outcome);
    }

    /** A promise that settles when the job reaches `status` (QEMU's job status names). */
    until(status) {
      if (this.status === status) return Promise.resolve(this);
      const d = deferred();
      if (this._startError !== undefined) d.reject(this._startError);
      else if (this._finished && status !== 'null') d.reject(new QmpError('GenericError', `Job '${this.id}' has ended`));
      else this._waits.push({ status, resolve: d.resolve, reject: d.reject });
      return d.promise;
    }

    pause() { return qmp('job-pause', { id: this.id }); }
    resume() { return qmp('job-resume', { id: this.id }); }
    cancel() { return qmp('job-cancel', { id: this.id }); }
    complete() { return qmp('job-complete', { id: this.id }); }
    finalize() { return qmp('job-finalize', { id: this.id }); }
    dismiss() { return qmp('job-dismiss', { id: this.id }); }
    setSpeed(speed) { return qmp('block-job-set-speed', { device: this.id, speed }); }
  }

  /**
   * Starts a job with a QMP job command (block-stream, block-commit, ...) and returns its Job at
   * once; `job.started` settles when the daemon has answered, and if it refused, `started`,
   * `ready` and `done` all reject with its QmpError.
   */
  function job(command, args) {
    const a = Object.assign({}, args);
    if (a['job-id'] === undefined) a['job-id'] = host.newJobId();
    const j = new Job(a['job-id'], command); // listens before the command runs: no event is missed
    j.started = send(command, a, a['job-id']).then(() => {
      j._accepted();
      return j;
    }, (e) => {
      j._refused(e);
      throw e;
    });
    j.started.catch(() => {});
    return j;
  }

  /** The backing chain under `node`, top first: [{node, file, format, virtualSize, backingFile}]. */
  async function chain(node) {
    const nodes = await qmp('query-named-block-nodes');
    const byName = new Map(nodes.map((n) => [n['node-name'], n]));
    const byFile = new Map(nodes.filter((n) => n.drv !== 'file').map((n) => [n.file, n]));
    let n = byName.get(node);
    if (n === undefined) throw new QmpError('GenericError', `Cannot find node '${node}'`);
    const layers = [];
    let image = n.image;
    while (image !== undefined) {
      const known = n !== undefined && n.file === image.filename ? n : byFile.get(image.filename);
      layers.push({
        node: known === undefined ? null : known['node-name'],
        file: image.filename,
        format: image.format,
        virtualSize: image['virtual-size'],
        backingFile: image['backing-filename'] === undefined ? null : image['backing-filename'],
      });
      image = image['backing-image'];
      n = undefined;
    }
    return layers;
  }

  function format(value) {
    if (typeof value === 'string') return value;
    if (value instanceof Error) return `${value.name}: ${value.message}`;
    try {
      return JSON.stringify(value);
    } catch (e) {
      return String(value);
    }
  }

  const bj = Object.freeze({
    qmp,
    job,
    chain,
    events: Object.freeze(events),
    log: (...values) => host.log(values.map(format).join(' ')),
    sleep: (ms) => {
      const d = deferred();
      const refused = host.sleep(Number(ms), () => d.resolve());
      if (refused !== null) throw new QmpError('GenericError', refused); // at once: a loop of them stops here
      return d.promise;
    },
    workflow: Object.freeze({ id: host.id(), script: host.script() }),
    QmpError,
  });

  /** Runs the module's default export and reports how it ended. */
  function run(main, argsJson) {
    if (typeof main !== 'function') {
      host.fail('GenericError', 'the script has no default export function (export default async function (bj, args) {...})');
      return;
    }
    let result;
    try {
      result = Promise.resolve(main(bj, JSON.parse(argsJson)));
    } catch (e) {
      result = Promise.reject(e);
    }
    result.then(
      (value) => {
        let json;
        try {
          json = value === undefined ? '' : JSON.stringify(value);
        } catch (e) {
          host.fail('GenericError', `the workflow's result cannot be written as JSON: ${e.message}`);
          return;
        }
        host.finish(json === undefined ? '' : json);
      },
      (e) => {
        if (e instanceof Error && typeof e.stack === 'string' && !(e instanceof QmpError)) host.log(e.stack);
        const errorClass = e instanceof Error && typeof e.class === 'string' ? e.class : 'GenericError';
        host.fail(errorClass, e instanceof Error ? `${e.name}: ${e.message}` : format(e));
      },
    );
  }

  return run;
})
