package io.blockjobs.platform.nbd;

/**
 * What a client learnt of an export in the handshake ({@code NBD_INFO_EXPORT},
 * {@code NBD_INFO_BLOCK_SIZE}, the options the server agreed to).
 *
 * @param size         the export's size in bytes
 * @param flags        its transmission flags ({@code NBD_FLAG_*}: READ_ONLY, SEND_FLUSH, ...)
 * @param minBlock     the server's minimum block size, 0 if it sent none
 * @param preferred    its preferred block size, 0 if none
 * @param maxBlock     its maximum block size, 0 if none
 * @param structured   whether structured replies were agreed
 * @param contextId    the id of the meta context block status asks for, or -1 if the server
 *                     agreed none
 */
record NbdExportInfo(long size, int flags, int minBlock, int preferred, int maxBlock, boolean structured,
                     int contextId) {

    /** Whether transmission flag {@code flag} is set. */
    boolean has(int flag) {
        return (flags & flag) != 0;
    }

    /** Whether block status reports a meta context. */
    boolean hasContext() {
        return contextId >= 0;
    }
}
