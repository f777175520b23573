package io.blockjobs.platform.qmp;

import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * Marks a record as a QAPI alternate of a string and an object type, told apart by the JSON
 * type of the value, as QEMU's {@code BlockDirtyBitmapOrStr} ({@code 'local': 'str',
 * 'external': 'BlockDirtyBitmap'}). A string value is taken as it is, an object is checked against
 * {@link #object}; the record binds both (a delegating {@code @JsonCreator} for the string, a
 * properties one for the object), so a checked value checks again the same (command-line
 * arguments are checked once to convert them, then as QMP's). {@code query-qmp-schema} shows the
 * type as an {@code alternate} of {@code str} and the object type, in that order, as QEMU does.
 */
@Retention(RetentionPolicy.RUNTIME)
@Target(ElementType.TYPE)
public @interface QmpAlternate {
    /** QAPI's name of the alternate, for "expected: NAME" errors. */
    String name();

    /** The record an object value is checked against (QAPI's object branch). */
    Class<? extends Record> object();
}
