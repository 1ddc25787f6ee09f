//! The search behind `assert_card_nowhere` finds a card number wherever it lands, so that its
//! "nowhere" means something: planted in a table, on SQLite and on PostgreSQL alike.

use sqlx::{AnyPool, Executor};

use crate::support::{Databases, GOOD_CARD, Setup, TestStack, order};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_number_planted_in_a_sqlite_table_is_found() {
    a_card_number_planted_in_a_table_is_found(Databases::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_number_planted_in_a_postgresql_table_is_found() {
    let test = "a_card_number_planted_in_a_postgresql_table_is_found";
    if let Some(postgres) = Databases::postgres_from_env(test) {
        a_card_number_planted_in_a_table_is_found(postgres).await;
    }
}

async fn a_card_number_planted_in_a_table_is_found(databases: Databases) {
    let system = databases.system();
    let mut stack = TestStack::start_with(Setup {
        databases,
        ..Setup::default()
    })
    .await;
    let answer = stack
        .post_order(&order("TRAIL-MUG", 1, GOOD_CARD), None, None)
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    stack.assert_card_nowhere(GOOD_CARD).await;

    // Only the first twelve digits, in a column the services write but never read back.
    let planted = format!("{}…", &GOOD_CARD[..12]);
    sqlx::any::install_default_drivers();
    let payments = AnyPool::connect(stack.database_url("payment"))
        .await
        .unwrap();
    payments
        .execute(format!("UPDATE payments SET decline_reason = '{planted}'").as_str())
        .await
        .unwrap();
    payments.close().await;

    let places = stack.places_holding(GOOD_CARD).await;
    let in_the_table = format!(
        "the payment database's payments.decline_reason holds {}: {planted}",
        &GOOD_CARD[..12]
    );
    assert!(
        places.contains(&in_the_table),
        "{system}: the planted digits were not found in the table; found: {places:#?}"
    );
}
