/**
 * The blockjobs SDK: the only API a job plugin is written against. It holds interfaces,
 * records and exceptions; the platform implements them.
 */
package io.blockjobs.sdk;
