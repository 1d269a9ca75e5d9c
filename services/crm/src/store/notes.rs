//! Notes and answers: what agents and staff wrote about a customer, optionally about one
//! of its contacts.

use centralita_platform::error::Error;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use super::new_id;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteRow {
    pub id: String,
    pub customer_id: String,
    pub contact: String,
    pub author: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

pub async fn add_note(
    tx: &Transaction<'_>,
    tenant: &str,
    customer: &str,
    contact: &str,
    author: &str,
    body: &str,
) -> Result<NoteRow, Error> {
    let id = new_id();
    let at: DateTime<Utc> = tx
        .query_one(
            "INSERT INTO notes (tenant, id, customer_id, contact, author, body) VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING created_at",
            &[&tenant, &id, &customer, &contact, &author, &body],
        )
        .await?
        .get(0);
    Ok(NoteRow {
        id,
        customer_id: customer.into(),
        contact: contact.into(),
        author: author.into(),
        body: body.into(),
        created_at: at,
    })
}

pub async fn notes(tx: &Transaction<'_>, tenant: &str, family: &[String], limit: i64) -> Result<Vec<NoteRow>, Error> {
    let rows = tx
        .query(
            "SELECT id, customer_id, contact, author, body, created_at FROM notes
             WHERE tenant = $1 AND customer_id = ANY($2) ORDER BY created_at DESC, id DESC LIMIT $3",
            &[&tenant, &family, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| NoteRow {
            id: r.get(0),
            customer_id: r.get(1),
            contact: r.get(2),
            author: r.get(3),
            body: r.get(4),
            created_at: r.get(5),
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRow {
    pub id: String,
    pub customer_id: String,
    pub contact: String,
    pub question: String,
    pub answer: String,
    pub asked_by: String,
    pub asked_at: DateTime<Utc>,
}

pub async fn add_answer(tx: &Transaction<'_>, tenant: &str, a: &AnswerRow) -> Result<AnswerRow, Error> {
    let at: DateTime<Utc> = tx
        .query_one(
            "INSERT INTO answers (tenant, id, customer_id, contact, question, answer, asked_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING asked_at",
            &[&tenant, &a.id, &a.customer_id, &a.contact, &a.question, &a.answer, &a.asked_by],
        )
        .await?
        .get(0);
    Ok(AnswerRow { asked_at: at, ..a.clone() })
}

pub async fn answers(tx: &Transaction<'_>, tenant: &str, family: &[String]) -> Result<Vec<AnswerRow>, Error> {
    let rows = tx
        .query(
            "SELECT id, customer_id, contact, question, answer, asked_by, asked_at FROM answers
             WHERE tenant = $1 AND customer_id = ANY($2) ORDER BY asked_at DESC, id DESC",
            &[&tenant, &family],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AnswerRow {
            id: r.get(0),
            customer_id: r.get(1),
            contact: r.get(2),
            question: r.get(3),
            answer: r.get(4),
            asked_by: r.get(5),
            asked_at: r.get(6),
        })
        .collect())
}
