package io.blockjobs.platform.image;

import io.blockjobs.sdk.block.BlockNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * The qcow2 snapshot table ({@code docs/interop/qcow2.txt}, "Snapshots"): parsed from and encoded
 * to QEMU 7.2's layout ({@code block/qcow2-snapshot.c}). Each entry is 8-byte aligned: a 40-byte
 * header, extra data (QEMU writes 24 bytes: {@code vm_state_size_large}, {@code disk_size},
 * {@code icount}; longer extra data is kept as it was), the id and the name.
 */
final class Qcow2Snapshots {
    /** QEMU's {@code QCOW_MAX_SNAPSHOTS}. */
    static final int MAX_SNAPSHOTS = 65536;
    /** QEMU's {@code QCOW_MAX_SNAPSHOTS_SIZE}. */
    static final long MAX_TABLE_BYTES = 64L << 20;
    /** QEMU's {@code QCOW_MAX_SNAPSHOT_EXTRA_DATA}. */
    static final int MAX_EXTRA = 1024;
    static final int HEADER_BYTES = 40;
    static final int EXTRA_BYTES = 24;

    private Qcow2Snapshots() {
    }

    /**
     * One snapshot as the table records it. {@code icount} is -1 where none was recorded;
     * {@code extra} holds extra data past the 24 bytes QEMU knows, written back unchanged.
     */
    record Entry(long l1Offset, int l1Size, String id, String name, long dateSec, long dateNsec, long vmClockNsec,
                 long vmStateSize, long diskSize, long icount, byte[] extra) {
    }

    /** The table as read: its entries and the bytes it spans from {@code snapshots_offset}. */
    record Table(List<Entry> entries, long bytes) {
    }

    /** Reads the table the header points to (QEMU's {@code qcow2_read_snapshots}). */
    static Table read(BlockNode file, Qcow2Header h) throws IOException {
        List<Entry> out = new ArrayList<>();
        if (h.snapshotCount == 0) {
            return new Table(out, 0);
        }
        String name = file.filename();
        long cluster = 1L << h.clusterBits;
        if (h.snapshotCount < 0 || h.snapshotCount > MAX_SNAPSHOTS) {
            throw new ImageException(name, "Snapshot table too large");
        }
        if (h.snapshotsOffset <= 0 || (h.snapshotsOffset & (cluster - 1)) != 0) {
            throw new ImageException(name, "Snapshot table offset invalid");
        }
        long fileSize = file.size();
        long offset = h.snapshotsOffset;
        for (int i = 0; i < h.snapshotCount; i++) {
            offset = (offset + 7) & ~7L;
            ByteBuffer head = readAt(file, offset, HEADER_BYTES, fileSize, name);
            offset += HEADER_BYTES;
            long l1Offset = head.getLong(0);
            int l1Size = head.getInt(8);
            int idSize = head.getShort(12) & 0xffff;
            int nameSize = head.getShort(14) & 0xffff;
            long dateSec = head.getInt(16) & 0xffffffffL;
            long dateNsec = head.getInt(20) & 0xffffffffL;
            long vmClock = head.getLong(24);
            long vmState = head.getInt(32) & 0xffffffffL;
            int extraSize = head.getInt(36);
            if (extraSize < 0 || extraSize > MAX_EXTRA) {
                throw new ImageException(name, "Too much extra metadata in snapshot table entry " + i);
            }
            ByteBuffer extra = readAt(file, offset, extraSize, fileSize, name);
            offset += extraSize;
            if (extraSize >= 8) {
                vmState = extra.getLong(0);
            }
            long diskSize = extraSize >= 16 ? extra.getLong(8) : h.size;
            long icount = extraSize >= 24 ? extra.getLong(16) : -1;
            byte[] unknown = new byte[Math.max(0, extraSize - EXTRA_BYTES)];
            extra.get(Math.min(extraSize, EXTRA_BYTES), unknown);
            String id = new String(readAt(file, offset, idSize, fileSize, name).array(), StandardCharsets.UTF_8);
            offset += idSize;
            String sn = new String(readAt(file, offset, nameSize, fileSize, name).array(), StandardCharsets.UTF_8);
            offset += nameSize;
            if (offset - h.snapshotsOffset > MAX_TABLE_BYTES) {
                throw new ImageException(name, "Snapshot table is too big");
            }
            // A snapshot's L1 table is checked when it is used (QEMU opens such images too).
            out.add(new Entry(l1Offset, l1Size, id, sn, dateSec, dateNsec, vmClock, vmState, diskSize, icount, unknown));
        }
        return new Table(out, offset - h.snapshotsOffset);
    }

    private static ByteBuffer readAt(BlockNode file, long offset, int n, long fileSize, String name) throws IOException {
        if (offset + n > fileSize) {
            throw new ImageException(name, "snapshot table runs past the end of the file");
        }
        ByteBuffer b = ByteBuffer.allocate(n);
        file.read(offset, b);
        return b.clear();
    }

    /** The encoded table, as QEMU's {@code qcow2_write_snapshots} lays it out. */
    static ByteBuffer encode(List<Entry> entries) {
        long size = 0;
        for (Entry e : entries) {
            size = (size + 7) & ~7L;
            size += HEADER_BYTES + EXTRA_BYTES + e.extra().length + utf8(e.id()).length + utf8(e.name()).length;
        }
        ByteBuffer b = ByteBuffer.allocate((int) size);
        for (Entry e : entries) {
            b.position((b.position() + 7) & ~7);
            byte[] id = utf8(e.id());
            byte[] name = utf8(e.name());
            b.putLong(e.l1Offset()).putInt(e.l1Size()).putShort((short) id.length).putShort((short) name.length)
                    .putInt((int) e.dateSec()).putInt((int) e.dateNsec()).putLong(e.vmClockNsec())
                    // Older readers take a VM state past 4 GiB as none (QEMU's rule).
                    .putInt(e.vmStateSize() <= 0xffffffffL ? (int) e.vmStateSize() : 0)
                    .putInt(EXTRA_BYTES + e.extra().length);
            b.putLong(e.vmStateSize()).putLong(e.diskSize()).putLong(e.icount()).put(e.extra());
            b.put(id).put(name);
        }
        return b.clear();
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /** QEMU's {@code find_new_snapshot_id}: one more than the largest numeric id ({@code strtoul}). */
    static String newId(List<Entry> entries) {
        long max = 0;
        for (Entry e : entries) {
            long v = 0;
            String s = e.id().strip();
            for (int i = 0; i < s.length() && Character.isDigit(s.charAt(i)) && v < Long.MAX_VALUE / 10; i++) {
                v = v * 10 + (s.charAt(i) - '0');
            }
            max = Math.max(max, v);
        }
        return Long.toUnsignedString(max + 1);
    }

    /** QEMU's {@code find_snapshot_by_id_and_name}: the index, or -1. */
    static int find(List<Entry> entries, String id, String name) {
        for (int i = 0; i < entries.size(); i++) {
            Entry e = entries.get(i);
            boolean match = id != null && name != null ? e.id().equals(id) && e.name().equals(name)
                    : id != null ? e.id().equals(id) : name != null && e.name().equals(name);
            if (match) {
                return i;
            }
        }
        return -1;
    }
}
