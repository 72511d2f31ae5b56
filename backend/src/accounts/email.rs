//! Mailing codes: templates (built in, replaceable from `email.templates_dir`) rendered into a
//! plain-text and an HTML part, sent over SMTP by lettre's async transport on the backend's
//! tokio runtime (never on a shard). Without a relay (`email.smtp.host` empty) a code is only
//! logged, on the console alone (`logs::CONSOLE_ONLY_TARGET`: never in the log files or the
//! live tail, which viewers read), and the server says so at start-up.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use ringchat_proto::v1::EmailCodePurpose;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{EmailConfig, SmtpTls};

/// A mail's three templates. Placeholders: `{{code}}`, `{{minutes}}`, `{{server_name}}`,
/// `{{email}}` (HTML-escaped in the HTML part).
#[derive(Debug, Clone)]
struct Template {
    subject: String,
    text: String,
    html: String,
}

const PLACEHOLDER_CODE: &str = "{{code}}";

fn builtin(purpose: EmailCodePurpose) -> Template {
    let (subject, text, html) = match purpose {
        EmailCodePurpose::ResetPassword => (
            include_str!("templates/reset_password.subject"),
            include_str!("templates/reset_password.txt"),
            include_str!("templates/reset_password.html"),
        ),
        _ => (
            include_str!("templates/register.subject"),
            include_str!("templates/register.txt"),
            include_str!("templates/register.html"),
        ),
    };
    Template {
        subject: subject.trim().to_owned(),
        text: text.to_owned(),
        html: html.to_owned(),
    }
}

fn file_stem(purpose: EmailCodePurpose) -> &'static str {
    match purpose {
        EmailCodePurpose::ResetPassword => "reset_password",
        _ => "register",
    }
}

/// The built-in template, with each file found in `dir` replacing its part. A replaced part
/// must still show the code.
fn load(dir: &str, purpose: EmailCodePurpose) -> Result<Template, String> {
    let mut t = builtin(purpose);
    if dir.is_empty() {
        return Ok(t);
    }
    let stem = file_stem(purpose);
    for (ext, part) in [
        ("subject", &mut t.subject),
        ("txt", &mut t.text),
        ("html", &mut t.html),
    ] {
        let path = Path::new(dir).join(format!("{stem}.{ext}"));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if ext != "subject" && !text.contains(PLACEHOLDER_CODE) {
                    return Err(format!(
                        "{}: has no {PLACEHOLDER_CODE}: the mail would not show the code",
                        path.display()
                    ));
                }
                *part = if ext == "subject" {
                    text.trim().to_owned()
                } else {
                    text
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Ok(t)
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One mail's values.
pub(crate) struct CodeMail<'a> {
    pub to: &'a str,
    pub code: &'a str,
    pub minutes: u64,
}

impl Template {
    fn render(&self, server_name: &str, mail: &CodeMail<'_>) -> (String, String, String) {
        let fill = |s: &str, escape: bool| {
            let e = |v: &str| if escape { html_escape(v) } else { v.to_owned() };
            s.replace(PLACEHOLDER_CODE, mail.code)
                .replace("{{minutes}}", &mail.minutes.to_string())
                .replace("{{server_name}}", &e(server_name))
                .replace("{{email}}", &e(mail.to))
        };
        (
            fill(&self.subject, false),
            fill(&self.text, false),
            fill(&self.html, true),
        )
    }
}

pub(crate) struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    server_name: String,
    register: Template,
    reset: Template,
    sending: Arc<Semaphore>,
}

impl Mailer {
    pub fn new(cfg: &EmailConfig, server_name: &str) -> Result<Self, String> {
        let from: Mailbox = cfg
            .smtp
            .from
            .parse()
            .map_err(|e| format!("email.smtp.from: {e}"))?;
        let transport = if cfg.smtp.host.is_empty() {
            tracing::warn!(
                "email.smtp.host is not set: e-mail codes are NOT sent, only shown on the console (configure [email.smtp] to mail them)"
            );
            None
        } else {
            let s = &cfg.smtp;
            let builder = match s.tls {
                SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host),
                SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
                    .map_err(|e| format!("email.smtp: {e}"))?,
                SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)
                    .map_err(|e| format!("email.smtp: {e}"))?,
            };
            let mut builder = builder
                .port(s.port)
                .timeout(Some(Duration::from_millis(s.timeout_ms)));
            if !s.username.is_empty() {
                builder =
                    builder.credentials(Credentials::new(s.username.clone(), s.password.clone()));
            }
            tracing::info!(host = %s.host, port = s.port, tls = ?s.tls, "e-mail codes are sent through this SMTP relay");
            Some(builder.build())
        };
        Ok(Self {
            transport,
            from,
            server_name: server_name.to_owned(),
            register: load(&cfg.templates_dir, EmailCodePurpose::Register)?,
            reset: load(&cfg.templates_dir, EmailCodePurpose::ResetPassword)?,
            sending: Arc::new(Semaphore::new(cfg.sends_in_flight_max)),
        })
    }

    /// A slot for one mail; `None` when `sends_in_flight_max` mails are on their way.
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.sending).try_acquire_owned().ok()
    }

    /// Sends (or, without a relay, logs) a code mail in the background, holding `slot` until
    /// the relay has answered. Failures are logged: the client has its answer already, and
    /// asks again after the resend interval.
    pub fn send(&self, slot: OwnedSemaphorePermit, purpose: EmailCodePurpose, mail: &CodeMail<'_>) {
        let template = match purpose {
            EmailCodePurpose::ResetPassword => &self.reset,
            _ => &self.register,
        };
        let Some(transport) = &self.transport else {
            tracing::info!(
                target: crate::logs::CONSOLE_ONLY_TARGET,
                to = mail.to,
                code = mail.code,
                purpose = purpose.as_str_name(),
                "e-mail code (no SMTP relay configured: logged, not sent)"
            );
            return;
        };
        let (subject, text, html) = template.render(&self.server_name, mail);
        // The parser `validate_email` checked the address with.
        let to = match mail.to.parse::<lettre::Address>() {
            Ok(to) => Mailbox::new(None, to),
            Err(err) => {
                tracing::warn!(%err, "e-mail address refused by the mailer; no code sent");
                return;
            }
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(text, html));
        let message = match message {
            Ok(m) => m,
            Err(err) => {
                tracing::error!(%err, "could not build the code mail");
                return;
            }
        };
        let transport = transport.clone();
        let purpose = purpose.as_str_name();
        tokio::spawn(async move {
            let _slot = slot;
            match transport.send(message).await {
                Ok(_) => {
                    metrics::counter!("ringchat_email_codes_sent_total").increment(1);
                    tracing::info!(purpose, "e-mail code sent");
                }
                Err(err) => {
                    metrics::counter!("ringchat_email_send_failures_total").increment(1);
                    tracing::warn!(%err, purpose, "sending an e-mail code failed");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_in_and_escape_html() {
        let t = builtin(EmailCodePurpose::Register);
        let mail = CodeMail {
            to: "a<b>@x.io",
            code: "012345",
            minutes: 10,
        };
        let (subject, text, html) = t.render("chat & co", &mail);
        assert!(subject.contains("012345"), "{subject}");
        assert!(text.contains("012345") && text.contains("10 minutes"));
        assert!(text.contains("a<b>@x.io"), "plain text is not escaped");
        assert!(html.contains("chat &amp; co") && html.contains("a&lt;b&gt;@x.io"));
        assert!(!html.contains("{{"));
    }

    #[test]
    fn a_templates_dir_replaces_parts_and_must_keep_the_code() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("reset_password.txt"), "code={{code}}").unwrap();
        let d = dir.path().to_str().unwrap();
        let t = load(d, EmailCodePurpose::ResetPassword).unwrap();
        assert_eq!(t.text, "code={{code}}");
        assert_eq!(t.html, builtin(EmailCodePurpose::ResetPassword).html);
        std::fs::write(dir.path().join("register.html"), "<p>no code</p>").unwrap();
        let err = load(d, EmailCodePurpose::Register).unwrap_err();
        assert!(err.contains("register.html"), "{err}");
    }
}
