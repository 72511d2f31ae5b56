//! Account helpers for the e-mail and device tests: requests and their expected replies.

use ringchat_bench::client::Client;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, EmailCodePurpose, ErrorCode, login};

use super::{PASSWORD, TestServer};

pub async fn hello(server: &TestServer) -> Client {
    let mut c = server.client().await;
    c.hello().await.unwrap();
    c
}

pub async fn request_code(c: &mut Client, email: &str, purpose: EmailCodePurpose) -> Body {
    c.request(Body::RequestEmailCode(v1::RequestEmailCode {
        email: email.into(),
        purpose: purpose as i32,
    }))
    .await
    .unwrap()
}

pub fn error_code(body: &Body) -> ErrorCode {
    match body {
        Body::Error(e) => ErrorCode::try_from(e.code).unwrap(),
        other => panic!("expected an Error, got {other:?}"),
    }
}

pub async fn register(c: &mut Client, name: &str, email: &str, code: &str) -> Body {
    c.request(Body::Register(v1::Register {
        username: name.into(),
        password: PASSWORD.into(),
        email: email.into(),
        email_code: code.into(),
        ..Default::default()
    }))
    .await
    .unwrap()
}

pub async fn login_email(c: &mut Client, email: &str, password: &str, device: &str) -> Body {
    c.request(Body::Login(v1::Login {
        account: Some(login::Account::Email(email.into())),
        credential: Some(login::Credential::Password(password.into())),
        device_id: device.into(),
        platform: v1::Platform::Web as i32,
        ..Default::default()
    }))
    .await
    .unwrap()
}

pub async fn reset(c: &mut Client, email: &str, code: &str, new_password: &str) -> Body {
    c.request(Body::ResetPassword(v1::ResetPassword {
        email: email.into(),
        code: code.into(),
        new_password: new_password.into(),
    }))
    .await
    .unwrap()
}

/// A code that is not `code`.
pub fn other_than(code: &str) -> String {
    let first = (code.as_bytes()[0] - b'0' + 1) % 10;
    format!("{first}{}", &code[1..])
}
