/** Jobs: QEMU's job state machine (states and verbs exactly), the registry, and their events. */
package io.blockjobs.platform.job;
