/**
 * The SDK's test kit (the {@code blockjobs-sdk} test-jar): in-memory nodes and a job harness,
 * so a plugin author unit-tests a job without a daemon.
 */
package io.blockjobs.sdk.testkit;
