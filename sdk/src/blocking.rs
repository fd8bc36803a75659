//! A blocking face for callers without an async runtime: it owns a small runtime and
//! drives a [`Producer`] on it.

use crate::client::{Client, ClientConfig};
use crate::error::ConnectError;
use crate::producer::{ProduceError, Producer, ProducerConfig, ProducerRecord, RecordReceipt};

/// Worker threads of the owned runtime: the producer's work is I/O-bound.
const RUNTIME_THREADS: usize = 2;

/// A producer for synchronous code.
pub struct BlockingProducer {
    runtime: tokio::runtime::Runtime,
    producer: Producer,
}

impl BlockingProducer {
    /// Connects to the broker and builds the producer.
    pub fn connect(client: ClientConfig, config: ProducerConfig) -> Result<Self, ConnectError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .enable_all()
            .build()
            .map_err(|e| ConnectError::Endpoint(e.to_string()))?;
        let client = runtime.block_on(Client::connect(client))?;
        let producer = {
            let _guard = runtime.enter();
            Producer::new(client, config)
        };
        Ok(Self { runtime, producer })
    }

    /// Sends a record and blocks until it is delivered or has failed.
    pub fn send(&self, record: ProducerRecord) -> Result<RecordReceipt, ProduceError> {
        self.runtime.block_on(async {
            let delivery = self.producer.send(record).await?;
            delivery.await
        })
    }

    /// Queues a record (blocking only while the buffer is full); `callback` runs once
    /// with its fate, on the producer's thread.
    pub fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordReceipt, ProduceError>) + Send + 'static,
    ) {
        self.runtime
            .block_on(self.producer.send_with_callback(record, callback));
    }

    /// Blocks until every queued record is delivered or failed.
    pub fn flush(&self) {
        self.runtime.block_on(self.producer.flush());
    }
}

impl Drop for BlockingProducer {
    fn drop(&mut self) {
        self.runtime.block_on(self.producer.close());
    }
}
