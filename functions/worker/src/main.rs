use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::wiring::aws::AwsStack;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::init_logging();
    let live = &AwsStack::from_env_with_idp().await?;
    run(service_fn(|e: LambdaEvent<SqsEvent>| {
        let span = tracing::info_span!("invocation", request_id = %e.context.request_id);
        async move {
            let stack = live.current().await;
            worker::handle(&stack.engine, &*stack.queue, e.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        }
        .instrument(span)
    }))
    .await
}
