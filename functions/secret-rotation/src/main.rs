use aws_lambda_events::event::secretsmanager::SecretsManagerSecretRotationEvent;
use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::wiring::aws::AwsStack;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::init_logging();
    let live = AwsStack::from_env_with_idp().await?;
    // The rotation steps read no policy: the stack as started serves them.
    let stack = live.base();
    let (store, vault, idp) = (&*stack.store, &*stack.vault, &*stack.idp);
    run(service_fn(
        |e: LambdaEvent<SecretsManagerSecretRotationEvent>| async move {
            secret_rotation::handle(store, vault, idp, e.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
