use lambda_runtime::{LambdaEvent, run, service_fn};
use serde_json::Value;
use shared::wiring::aws::AwsStack;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::init_logging();
    let live = &AwsStack::from_env().await?;
    let secret =
        &shared::aws::secret_from_env(&live.base().sdk, "STEWARD_OKTA_HOOK_SECRET_ARN").await?;
    run(service_fn(|e: LambdaEvent<Value>| {
        let span = tracing::info_span!("invocation", request_id = %e.context.request_id);
        async move {
            let stack = live.current().await;
            idp_hook::dispatch(&stack.engine, secret, e.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        }
        .instrument(span)
    }))
    .await
}
