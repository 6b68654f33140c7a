use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::wiring::aws::AwsStack;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::init_logging();
    let live = &AwsStack::from_env().await?;
    let secret = shared::aws::secret_from_env(&live.base().sdk, scheduler::SEAL_KEY_ENV).await?;
    let sealer = &shared::audit::seal::Sealer::from_secret(&secret)?;
    run(service_fn(
        |e: LambdaEvent<EventBridgeEvent<scheduler::Job>>| {
            let span = tracing::info_span!("invocation", request_id = %e.context.request_id);
            async move {
                let stack = live.current().await;
                scheduler::handle(&stack.engine, sealer, e.payload)
                    .await
                    .map_err(lambda_runtime::Error::from)
            }
            .instrument(span)
        },
    ))
    .await
}
