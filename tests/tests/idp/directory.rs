//! The Directory port's contract, run against every adapter: the people file, and Okta's Users
//! API (against the local fake that follows Okta's documented contract). The same people are in
//! each: Ana (active, managed by Maria), Maria (active), Carl (deprovisioned: departed).

use crate::fake_okta::FakeOkta;
use shared::idp::okta::OktaDirectory;
use shared::people_file::PeopleFileDirectory;
use shared::ports::Directory;
use statemachines::onboarding::OwnerStatus;

const PEOPLE: &str = r#"
[[person]]
email = "ana@example.com"
name = "Ana Lima"
manager = "maria@example.com"

[[person]]
email = "maria@example.com"
name = "Maria Rossi"

[[person]]
email = "carl@example.com"
name = "Carl Former"
active = false
"#;

async fn the_contract(d: &dyn Directory) {
    let ana = d
        .person("ana@example.com")
        .await
        .unwrap()
        .expect("Ana is listed");
    assert_eq!(ana.email, "ana@example.com");
    assert_eq!(ana.name, "Ana Lima");
    assert!(ana.active);
    assert_eq!(ana.manager.as_deref(), Some("maria@example.com"));

    let same = d.person("  Ana@Example.COM ").await.unwrap();
    assert_eq!(
        same.as_ref().map(|p| p.email.as_str()),
        Some("ana@example.com"),
        "case and spaces do not matter"
    );

    let carl = d
        .person("carl@example.com")
        .await
        .unwrap()
        .expect("Carl is listed");
    assert!(!carl.active, "a departed person is inactive");

    assert_eq!(d.person("nobody@example.com").await.unwrap(), None);
    assert_eq!(d.person("not an address").await.unwrap(), None);

    assert_eq!(
        d.owner_status("ana@example.com").await.unwrap(),
        OwnerStatus::Active
    );
    assert_eq!(
        d.owner_status("carl@example.com").await.unwrap(),
        OwnerStatus::Inactive
    );
    assert_eq!(
        d.owner_status("nobody@example.com").await.unwrap(),
        OwnerStatus::Unknown
    );
}

#[tokio::test]
async fn the_people_file_follows_the_directory_contract() {
    the_contract(&PeopleFileDirectory::parse(PEOPLE).unwrap()).await;
}

#[tokio::test]
async fn okta_users_follow_the_directory_contract() {
    let fake = FakeOkta::start();
    let maria = fake.seed_user("maria@example.com", "Maria", "Rossi", "ACTIVE", None);
    let ana = fake.seed_user("ana@example.com", "Ana", "Lima", "ACTIVE", Some(&maria));
    fake.seed_user("carl@example.com", "Carl", "Former", "DEPROVISIONED", None);
    // Ana's login is not her e-mail address: the search by e-mail finds her.
    fake.set_login(&ana, "ana.lima");
    let directory = OktaDirectory(crate::okta::okta(&fake));
    the_contract(&directory).await;

    // People who still work here are active whatever their sign-in state; the rest are not.
    for (status, active) in [
        ("PASSWORD_EXPIRED", true),
        ("LOCKED_OUT", true),
        ("SUSPENDED", false),
        ("STAGED", false),
    ] {
        let email = format!("{}@example.com", status.to_lowercase());
        fake.seed_user(&email, "Some", "One", status, None);
        let p = directory.person(&email).await.unwrap().unwrap();
        assert_eq!(p.active, active, "{status}");
    }
    fake.assert_well_formed();
}

#[tokio::test]
async fn okta_being_down_is_an_error_not_an_unknown_person() {
    let fake = FakeOkta::start();
    fake.seed_user("ana@example.com", "Ana", "Lima", "ACTIVE", None);
    let directory = OktaDirectory(crate::okta::okta(&fake));
    fake.fail_next(10);
    let e = directory.person("ana@example.com").await.unwrap_err();
    assert!(e.to_string().contains("Okta"), "{e}");
}
