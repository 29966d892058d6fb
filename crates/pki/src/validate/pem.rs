//! A strict PEM reader for registered CA certificates.
//!
//! Stricter than the usual readers on purpose: a registration must hold one certificate
//! and nothing else, so text outside blocks, unknown block types and, above all, private
//! keys are errors rather than things to skip.

use base64::Engine as _;

use super::CertRuleError;

/// One `-----BEGIN <label>-----` … `-----END <label>-----` block, body not yet decoded.
#[derive(Debug)]
struct Block<'a> {
    label: &'a str,
    body: Vec<&'a str>,
}

/// Returns the DER of the single CERTIFICATE block in `text`.
pub(crate) fn single_certificate(text: &str) -> Result<Vec<u8>, CertRuleError> {
    if text.trim().is_empty() {
        return Err(CertRuleError::Empty);
    }
    // A key anywhere is reported first, whatever else is wrong: it is the mistake with
    // consequences (the key has now been sent to the operator).
    if let Some(label) = text
        .lines()
        .filter_map(|l| begin_label(l.trim()))
        .find(|label| label.contains("PRIVATE KEY"))
    {
        return Err(CertRuleError::PrivateKeyPresent {
            label: label.to_owned(),
        });
    }
    let blocks = blocks(text)?;
    if let Some(b) = blocks.iter().find(|b| b.label != "CERTIFICATE") {
        return Err(CertRuleError::UnexpectedBlock {
            label: b.label.to_owned(),
        });
    }
    let [block] = blocks.as_slice() else {
        return Err(CertRuleError::CertificateCount {
            count: blocks.len(),
        });
    };
    let b64: String = block.body.concat();
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| CertRuleError::BadBase64)
}

fn begin_label(line: &str) -> Option<&str> {
    line.strip_prefix("-----BEGIN ")?.strip_suffix("-----")
}

fn end_label(line: &str) -> Option<&str> {
    line.strip_prefix("-----END ")?.strip_suffix("-----")
}

fn not_pem(reason: &str) -> CertRuleError {
    CertRuleError::NotPem {
        reason: reason.to_owned(),
    }
}

fn blocks(text: &str) -> Result<Vec<Block<'_>>, CertRuleError> {
    let mut out = Vec::new();
    let mut open: Option<Block<'_>> = None;
    for line in text.lines().map(str::trim) {
        match open.take() {
            None => {
                if line.is_empty() {
                    continue;
                }
                let Some(label) = begin_label(line) else {
                    return Err(not_pem(if out.is_empty() {
                        "no PEM block found where the text starts"
                    } else {
                        "unexpected text outside PEM blocks"
                    }));
                };
                open = Some(Block {
                    label,
                    body: Vec::new(),
                });
            }
            Some(mut block) => {
                if let Some(label) = end_label(line) {
                    if label != block.label {
                        return Err(not_pem("END line does not match its BEGIN line"));
                    }
                    out.push(block);
                } else if line.starts_with("-----") {
                    return Err(not_pem("malformed or nested boundary line"));
                } else {
                    if !line.is_empty() {
                        block.body.push(line);
                    }
                    open = Some(block);
                }
            }
        }
    }
    if open.is_some() {
        return Err(not_pem("a BEGIN line has no matching END line"));
    }
    if out.is_empty() {
        return Err(not_pem("no PEM block found"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "MIIB";

    fn cert_block(body: &str) -> String {
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    #[test]
    fn decodes_one_block_with_crlf_and_blank_lines() {
        let text = format!("\r\n{}\r\n\r\n", cert_block(BODY).replace('\n', "\r\n"));
        assert_eq!(single_certificate(&text).unwrap(), vec![0x30, 0x82, 0x01]);
    }

    #[test]
    fn key_is_reported_before_structure_errors() {
        let text = "garbage\n-----BEGIN CERTIFICATE-----\n-----BEGIN EC PRIVATE KEY-----\nAAAA\n";
        assert!(matches!(
            single_certificate(text),
            Err(CertRuleError::PrivateKeyPresent { label }) if label == "EC PRIVATE KEY"
        ));
    }

    #[test]
    fn refuses_structural_problems() {
        for (text, want) in [
            ("hello", "no PEM block found where the text starts"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n",
                "a BEGIN line has no matching END line",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END X509 CRL-----\n",
                "END line does not match its BEGIN line",
            ),
        ] {
            match single_certificate(text) {
                Err(CertRuleError::NotPem { reason }) => assert_eq!(reason, want, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let trailing = format!("{}trailing words\n", cert_block(BODY));
        assert!(matches!(
            single_certificate(&trailing),
            Err(CertRuleError::NotPem { reason }) if reason == "unexpected text outside PEM blocks"
        ));
    }

    #[test]
    fn counts_and_labels() {
        let two = format!("{}{}", cert_block(BODY), cert_block(BODY));
        assert_eq!(
            single_certificate(&two),
            Err(CertRuleError::CertificateCount { count: 2 })
        );
        let params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            cert_block(BODY)
        );
        assert_eq!(
            single_certificate(&params),
            Err(CertRuleError::UnexpectedBlock {
                label: "EC PARAMETERS".into()
            })
        );
        assert_eq!(
            single_certificate(&cert_block("!!notbase64!!")),
            Err(CertRuleError::BadBase64)
        );
        assert_eq!(single_certificate(" \n\t"), Err(CertRuleError::Empty));
    }
}
