/**
 * The SDK's test kit (the {@code blockjobs-sdk} test-jar): a plugin author tests a job type
 * without a daemon, as the platform would run it.
 *
 * <ul>
 *   <li>{@link io.blockjobs.sdk.testkit.MemoryNode}: an in-memory image with qcow2's behaviour
 *       (clusters, backing, copy-on-read, zeroes, discard, unallocate, serialising ranges, write
 *       hooks) and injected faults ({@link io.blockjobs.sdk.testkit.Fault}) and held reads
 *       ({@link io.blockjobs.sdk.testkit.Stall}); {@link io.blockjobs.sdk.testkit.MemoryChain}
 *       builds backing chains of them.</li>
 *   <li>{@link io.blockjobs.sdk.testkit.JobHarness}: the platform in small: a graph with
 *       permissions, filters and frozen links, jobs prepared from JSON arguments
 *       ({@link io.blockjobs.sdk.testkit.QmpArguments}) and run on virtual threads
 *       ({@link io.blockjobs.sdk.testkit.HarnessJob}) with QMP's verbs, events, error policies, a
 *       real copier and a fake clock ({@link io.blockjobs.sdk.testkit.FakeClock}); clients
 *       ({@link io.blockjobs.sdk.testkit.RootEdge}) write beside the jobs; finalization goes
 *       through a {@link io.blockjobs.sdk.testkit.RecordingGraphEdit}. A plugin's block drivers
 *       open in it as in the platform once installed
 *       ({@link io.blockjobs.sdk.testkit.JobHarness#install}): a job's filters of them, and nodes
 *       a test opens as {@code blockdev-add} would ({@link io.blockjobs.sdk.testkit.JobHarness#open}).</li>
 *   <li>{@link io.blockjobs.sdk.testkit.JobConformanceTest}: the test every job plugin extends.</li>
 * </ul>
 *
 * <p>Plugins depend on the test-jar in test scope, with {@code tools.jackson.core:jackson-databind}
 * beside it (the kit reads arguments with it).
 */
package io.blockjobs.sdk.testkit;
