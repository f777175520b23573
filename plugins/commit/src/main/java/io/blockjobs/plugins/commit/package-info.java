/** The {@code commit} job: QMP {@code block-commit}. */
package io.blockjobs.plugins.commit;
