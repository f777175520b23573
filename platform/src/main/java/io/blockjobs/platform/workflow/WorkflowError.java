package io.blockjobs.platform.workflow;

import com.fasterxml.jackson.annotation.JsonProperty;

/**
 * Why a workflow failed: a QMP error class ({@code GenericError}, {@code DeviceNotFound}, ...) and
 * a description, as a QMP error reply carries them.
 *
 * @param errorClass the error class
 * @param desc       the description
 */
public record WorkflowError(@JsonProperty("class") String errorClass, String desc) {
}
