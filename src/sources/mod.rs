//! Where readings come from: MQTT brokers (and, next, Modbus devices). Each source decodes
//! its payloads into batches, submits them to the pipeline, and confirms its input only after
//! the pipeline's output is committed.

pub mod modbus;
pub mod mqtt;
