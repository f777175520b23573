package io.blockjobs.platform.cli;

import io.blockjobs.platform.Json;
import io.blockjobs.platform.event.EventBus;
import io.blockjobs.platform.graph.BlockGraph;
import io.blockjobs.platform.job.JobManager;
import io.blockjobs.platform.nbd.NbdCommands;
import io.blockjobs.platform.nbd.NbdServer;
import io.blockjobs.platform.qmp.BlockCommands;
import io.blockjobs.platform.qmp.CoreCommands;
import io.blockjobs.platform.qmp.JobCommands;
import io.blockjobs.platform.qmp.PluginCommands;
import io.blockjobs.platform.qmp.TransactionCommand;
import io.blockjobs.platform.qmp.WorkflowCommands;
import io.blockjobs.platform.workflow.WorkflowEngine;
import io.blockjobs.platform.workflow.WorkflowScheduler;
import io.blockjobs.platform.plugin.PluginHost;
import io.blockjobs.platform.qmp.QmpDispatcher;
import io.blockjobs.platform.qmp.QmpServer;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.nio.NioIoHandler;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** The running daemon: the graph, jobs, QMP and NBD servers, wired together. */
final class Daemon {
    private static final Logger LOG = LoggerFactory.getLogger(Daemon.class);

    final EventBus events = new EventBus();
    final BlockGraph graph = BlockGraph.withBuiltInDrivers();
    final io.blockjobs.platform.graph.DriverRegistry drivers = graph.drivers();
    final io.blockjobs.platform.bitmap.Bitmaps bitmaps = new io.blockjobs.platform.bitmap.Bitmaps(graph);
    final QmpDispatcher dispatcher = new QmpDispatcher();
    final JobManager jobs = new JobManager(events, graph, bitmaps, dispatcher::callOnMainLoop);
    final EventLoopGroup group = new MultiThreadIoEventLoopGroup(2, NioIoHandler.newFactory());
    final QmpServer qmp;
    final io.blockjobs.platform.qmp.Chardevs chardevs = new io.blockjobs.platform.qmp.Chardevs();
    final NbdServer nbd;
    final PluginHost plugins;
    final WorkflowEngine workflows;
    final WorkflowScheduler schedules;
    final io.blockjobs.platform.qmp.BackupStoreCommands backupStore;
    private final CountDownLatch stopped = new CountDownLatch(1);
    private final AtomicBoolean stopping = new AtomicBoolean();

    Daemon() {
        String version = Version.get();
        qmp = new QmpServer(group, dispatcher, events, CoreCommands.greeting(version));
        nbd = new NbdServer(group, graph, events, bitmaps);
        drivers.register(new io.blockjobs.platform.nbd.NbdClientDriver(group), "built-in"); // the NBD client
        CoreCommands.register(dispatcher, version, () -> dispatcher.onMainLoop(() -> {
            shutdown("host-qmp-quit");
            return null;
        }), drivers);
        BlockCommands.register(dispatcher, graph, jobs, bitmaps);
        io.blockjobs.platform.qmp.BitmapCommands.register(dispatcher, bitmaps);
        io.blockjobs.platform.qmp.GraphQueryCommands.register(dispatcher, graph);
        JobCommands.register(dispatcher, jobs);
        NbdCommands.register(dispatcher, nbd);
        io.blockjobs.platform.nbd.NbdLegacyCommands.register(dispatcher, nbd, graph);
        io.blockjobs.platform.qmp.ResizeCommands.register(dispatcher, graph, jobs, bitmaps, events);
        io.blockjobs.platform.qmp.ChildChangeCommand.register(dispatcher, graph);
        graph.setDriverEvents(io.blockjobs.platform.event.DriverEventSink.of(events));
        graph.addNodeListener(new BlockGraph.NodeListener() {
            @Override
            public void opened(io.blockjobs.platform.graph.GraphNode node) {
                if (node.driverNode() instanceof io.blockjobs.platform.image.Qcow2Node qcow2) {
                    qcow2.setCorruptionListener((msg, offset, size, fatal) -> events.publish(
                            new io.blockjobs.platform.event.QmpEvent.BlockImageCorrupted("", java.util.Optional.of(node.name()),
                                    msg, offset < 0 ? java.util.Optional.empty() : java.util.Optional.of(offset),
                                    size < 0 ? java.util.Optional.empty() : java.util.Optional.of(size), fatal)));
                }
            }
        });
        io.blockjobs.platform.qmp.InternalSnapshotCommands.register(dispatcher, graph, jobs);
        io.blockjobs.platform.qmp.ObjectCommands.register(dispatcher, graph);
        io.blockjobs.platform.qmp.Chardevs.register(dispatcher, chardevs);
        plugins = new PluginHost(PluginCommands.sink(dispatcher, jobs), jobs, graph);
        PluginCommands.register(dispatcher, plugins);
        TransactionCommand.register(dispatcher, jobs, plugins, graph, bitmaps);
        backupStore = io.blockjobs.platform.qmp.BackupStoreCommands.register(dispatcher, graph);
        workflows = new WorkflowEngine(events, dispatcher::execute, home().resolve("scripts"));
        schedules = workflows.scheduler();
        WorkflowCommands.register(dispatcher, workflows, schedules);
    }

    /** The distribution's folder (bin/, lib/, plugins/, scripts/), as the launcher tells it. */
    static java.nio.file.Path home() {
        return java.nio.file.Path.of(System.getProperty("blockjobs.home", "."));
    }

    /** Loads the plugins of a folder, on the main loop (PF4J wants one thread). */
    void loadPlugins(java.nio.file.Path dir) throws java.io.IOException {
        try {
            dispatcher.onMainLoop(() -> {
                plugins.loadAll(dir);
                return null;
            }).get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new java.io.IOException("interrupted");
        } catch (java.util.concurrent.ExecutionException e) {
            throw new java.io.IOException(e.getCause().getMessage(), e.getCause());
        }
    }

    /** Stops everything once: announces SHUTDOWN, cancels jobs, closes exports and images. */
    void shutdown(String reason) {
        if (!stopping.compareAndSet(false, true)) {
            return;
        }
        LOG.info("shutting down ({})", reason);
        events.publish(new io.blockjobs.platform.event.QmpEvent.Shutdown(false, reason));
        try {
            schedules.close();
            workflows.close(); // cancels the workflows' jobs while QMP still runs
            jobs.close();
            nbd.close();
            graph.close();
            qmp.close();
            dispatcher.close();
            group.shutdownGracefully(0, 2, java.util.concurrent.TimeUnit.SECONDS).syncUninterruptibly();
        } finally {
            stopped.countDown();
        }
    }

    void awaitStop() throws InterruptedException {
        stopped.await();
    }
}
