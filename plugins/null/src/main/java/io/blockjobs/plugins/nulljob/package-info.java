/** The {@code null} job: the smallest complete job plugin, written against the SDK only. */
package io.blockjobs.plugins.nulljob;
