/**
 * Dirty bitmaps: which parts of a node changed since a point in time, at some granularity, as
 * QEMU's {@code BdrvDirtyBitmap}. Every completed write, write-zeroes and discard through a node
 * marks its enabled bitmaps, whatever path the request came by.
 */
package io.blockjobs.sdk.bitmap;
