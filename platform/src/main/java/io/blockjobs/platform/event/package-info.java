/** The event bus: QMP monitors are one subscriber, workflows another. */
package io.blockjobs.platform.event;
