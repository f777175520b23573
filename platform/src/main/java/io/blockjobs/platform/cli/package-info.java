/** Entry points: {@code blockjobd} (the daemon) and {@code blockjobs} (the client). */
package io.blockjobs.platform.cli;
