/** The {@code stream} job: QMP {@code block-stream}. */
package io.blockjobs.plugins.stream;
