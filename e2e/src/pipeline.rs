//! The four services of the pipeline started on a [`Stack`] in one call: command,
//! processor(s), materializer and query, with the flags the tests give each one unless a test
//! says otherwise.

use crate::service::{all_ready, Flags, Service, MATERIALIZER_ARGS, PROCESSOR_ARGS, QUERY_ARGS};
use crate::stack::Stack;
use anyhow::{ensure, Result};

/// How [`Pipeline::start`] starts each service, and how many processors.
#[derive(Debug, Clone, Copy)]
pub struct PipelineOptions<'a> {
    /// The command's flags; default none.
    pub command: Flags<'a>,
    /// The flags of every processor instance; default [`PROCESSOR_ARGS`].
    pub processor: Flags<'a>,
    /// Processor instances, in one consumer group and started together; default 1.
    pub processors: usize,
    /// The materializer's flags; default [`MATERIALIZER_ARGS`].
    pub materializer: Flags<'a>,
    /// The query service's flags; default [`QUERY_ARGS`].
    pub query: Flags<'a>,
}

impl PipelineOptions<'_> {
    /// The defaults, with `n` processor instances.
    pub fn processors(n: usize) -> Self {
        Self {
            processors: n,
            ..Self::default()
        }
    }
}

impl Default for PipelineOptions<'_> {
    fn default() -> Self {
        Self {
            command: Flags::args(&[]),
            processor: Flags::args(PROCESSOR_ARGS),
            processors: 1,
            materializer: Flags::args(MATERIALIZER_ARGS),
            query: Flags::args(QUERY_ARGS),
        }
    }
}

/// The running services of the pipeline, each on a free port of its own.
pub struct Pipeline {
    pub command: Service,
    /// The first processor instance.
    pub processor: Service,
    /// The other processor instances ([`PipelineOptions::processors`] − 1 of them).
    pub more_processors: Vec<Service>,
    pub materializer: Service,
    pub query: Service,
}

impl Pipeline {
    /// Starts the services (see [`Pipeline::spawn`]) and waits until each answers `/readyz`
    /// with `200` ([`all_ready`]).
    pub async fn start(stack: &Stack, options: PipelineOptions<'_>) -> Result<Self> {
        let pipeline = Self::spawn(stack, options)?;
        all_ready(&pipeline.services()).await?;
        Ok(pipeline)
    }

    /// Starts the processors, the command, the materializer and the query service, in that
    /// order (the processors create every topic), each listening on its port, without
    /// waiting for them to be ready: for a test that waits for them together with services
    /// of its own, or for longer.
    pub fn spawn(stack: &Stack, options: PipelineOptions<'_>) -> Result<Self> {
        ensure!(
            options.processors >= 1,
            "a pipeline needs at least one processor"
        );
        let processor = stack.service_with("processor", options.processor)?;
        let more_processors = (1..options.processors)
            .map(|_| stack.service_with("processor", options.processor))
            .collect::<Result<Vec<_>>>()?;
        let command = stack.service_with("command", options.command)?;
        let materializer = stack.service_with("materializer", options.materializer)?;
        let query = stack.service_with("query", options.query)?;
        Ok(Self {
            command,
            processor,
            more_processors,
            materializer,
            query,
        })
    }

    /// Every service, in the order they were started.
    pub fn services(&self) -> Vec<&Service> {
        let mut all = vec![&self.processor];
        all.extend(&self.more_processors);
        all.extend([&self.command, &self.materializer, &self.query]);
        all
    }
}
