//! `moldau`: the command-line program over Moldau's log. `moldau serve` speaks Kafka's wire
//! protocol over an embedded [`core_log::Log`], so that unmodified Kafka clients
//! (librdkafka, kafka-python, the Java client) produce to it and consume from it.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use moldau::serve::{ServeConfig, Server};
//! let log = core_log::Log::open("./data")?;
//! let server = Server::bind(log, ServeConfig::new("127.0.0.1:9092".parse()?)).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

pub mod serve;
