package io.blockjobs.sdk.error;

/**
 * A command failed in a way the client should hear about: the message becomes the QMP error's
 * {@code desc}, so write it for a person who must act on it.
 */
public class CommandException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final ErrorClass errorClass;

    public CommandException(ErrorClass errorClass, String message) {
        super(message);
        this.errorClass = errorClass;
    }

    public CommandException(String message) {
        this(ErrorClass.GENERIC_ERROR, message);
    }

    public CommandException(String message, Throwable cause) {
        super(message, cause);
        this.errorClass = ErrorClass.GENERIC_ERROR;
    }

    public ErrorClass errorClass() {
        return errorClass;
    }
}
