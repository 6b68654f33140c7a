use aws_lambda_events::event::secretsmanager::SecretsManagerSecretRotationEvent;
use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::wiring::aws::AwsStack;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::init_logging();
    let live = AwsStack::from_env_with_idp().await?;
    // The rotation steps read no policy: the stack as started serves them.
    let stack = live.base();
    let (store, vault, idp) = (&*stack.store, &*stack.vault, &*stack.idp);
    run(service_fn(
        |e: LambdaEvent<SecretsManagerSecretRotationEvent>| {
            let span = tracing::info_span!("invocation", request_id = %e.context.request_id);
            async move {
                secret_rotation::handle(store, vault, idp, e.payload)
                    .await
                    .map_err(lambda_runtime::Error::from)
            }
            .instrument(span)
        },
    ))
    .await
}
