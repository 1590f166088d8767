// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;
use http::header;

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// Galion Edge patch: a header name with the bytes it is written as, both made once, for a
/// header inserted on every request. Inserting it parses nothing and allocates nothing, where
/// a `&'static str` name is parsed on every insert and a custom `HeaderName` copied into a
/// new buffer for the case map.
#[derive(Debug, Clone)]
pub struct CasedHeaderName {
    name: HeaderName,
    case: &'static str,
}

impl CasedHeaderName {
    /// A name written as `case` (any ASCII case); fails on what is not a header name.
    pub fn new(case: &'static str) -> std::result::Result<Self, http::header::InvalidHeaderName> {
        Ok(CasedHeaderName {
            name: HeaderName::from_bytes(case.as_bytes())?,
            case,
        })
    }

    /// A lowercase name, written as it is; panics as `HeaderName::from_static` does on
    /// anything else (at compile time in a `const`).
    pub const fn from_static(name: &'static str) -> Self {
        CasedHeaderName {
            name: HeaderName::from_static(name),
            case: name,
        }
    }

    /// The name, lowercase.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The bytes the name is written as.
    pub fn as_str(&self) -> &'static str {
        self.case
    }
}

impl IntoCaseHeaderName for &CasedHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(Bytes::from_static(self.case.as_bytes()))
    }

    fn into_header_names(
        self,
        with_case: bool,
    ) -> std::result::Result<(HeaderName, Option<CaseHeaderName>), http::header::InvalidHeaderName>
    {
        let case = with_case.then(|| CaseHeaderName(Bytes::from_static(self.case.as_bytes())));
        Ok((self.name.clone(), case))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// Galion Edge patch: the [`HeaderName`] and, when `with_case`, the case to write it in.
    /// By default the case is made and parsed back into a name, as before; a name that is
    /// already a [`HeaderName`] is used as it is, without that parse and its allocations.
    #[doc(hidden)]
    fn into_header_names(
        self,
        with_case: bool,
    ) -> std::result::Result<(HeaderName, Option<CaseHeaderName>), http::header::InvalidHeaderName>
    where
        Self: Sized,
    {
        let case = self.into_case_header_name();
        let name = HeaderName::from_bytes(case.as_slice())?;
        Ok((name, with_case.then_some(case)))
    }
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }

    // Galion Edge patch: no parse of a name that is already one.
    fn into_header_names(
        self,
        with_case: bool,
    ) -> std::result::Result<(HeaderName, Option<CaseHeaderName>), http::header::InvalidHeaderName>
    {
        let case = with_case.then(|| CaseHeaderName(titled_header_name(&self)));
        Ok((self, case))
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    // Galion Edge patch: no parse of a name that is already one.
    fn into_header_names(
        self,
        with_case: bool,
    ) -> std::result::Result<(HeaderName, Option<CaseHeaderName>), http::header::InvalidHeaderName>
    {
        let case = with_case.then(|| CaseHeaderName(titled_header_name(self)));
        Ok((self.clone(), case))
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }
}
