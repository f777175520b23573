/** The {@code mirror} job: QMP {@code blockdev-mirror} and {@code drive-mirror}. */
package io.blockjobs.plugins.mirror;
