//! Where readings come from: MQTT brokers and polled Modbus devices. Each source decodes
//! its input into batches and submits them to the pipeline. MQTT confirms its input only after
//! the pipeline's output is committed; a Modbus poll has nothing to confirm (the device keeps
//! its registers), so it only waits for room in the channel.

pub mod modbus;
pub mod mqtt;
