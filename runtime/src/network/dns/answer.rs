//! Answers to one datagram: local A (and empty AAAA) answers for the network's names,
//! SERVFAIL replies, and what is left to forward.

use std::net::Ipv4Addr;

use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Packet, PacketFlag, QCLASS, QTYPE, RCODE, ResourceRecord, TYPE};

/// TTL of local answers (docker's).
const TTL: u32 = 600;

/// `query` turned into a SERVFAIL reply (header flags only; the question stays).
pub(super) fn servfail(query: &[u8]) -> Vec<u8> {
    let mut reply = query.to_vec();
    if reply.len() >= 4 {
        reply[2] |= 0x80; // QR: a response
        reply[3] = (reply[3] & 0x70) | 0x80 | RCODE::ServerFailure as u8; // RA, SERVFAIL
    }
    reply
}

/// What to do with a datagram.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// Send this reply.
    Local(Vec<u8>),
    /// Not a name of the network: ask upstream.
    Forward,
    /// Not a DNS query (or a hostile one): no reply.
    Ignore,
}

/// Answers `query` from `lookup` if it asks for a name of the network.
pub(super) fn answer(query: &[u8], mut lookup: impl FnMut(&str) -> Option<Ipv4Addr>) -> Answer {
    let Ok(packet) = Packet::parse(query) else {
        // A query this parser does not know (a rare type, a record it cannot read) is
        // still a query: the upstream servers may know it.
        let is_query = query.len() >= 12 && query[2] & 0x80 == 0;
        return match is_query {
            true => Answer::Forward,
            false => Answer::Ignore,
        };
    };
    if packet.has_flags(PacketFlag::RESPONSE) {
        return Answer::Ignore;
    }
    let [question] = packet.questions.as_slice() else {
        return Answer::Forward;
    };
    let wanted = match question.qtype {
        QTYPE::TYPE(TYPE::A) => TYPE::A,
        QTYPE::TYPE(TYPE::AAAA) => TYPE::AAAA,
        _ => return Answer::Forward,
    };
    if !matches!(question.qclass, QCLASS::CLASS(CLASS::IN)) {
        return Answer::Forward;
    }
    let name = question.qname.to_string().to_ascii_lowercase();
    let Some(ip) = lookup(name.trim_end_matches('.')) else {
        return Answer::Forward;
    };
    let mut reply = Packet::new_reply(packet.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
    if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.questions.push(question.clone());
    if wanted == TYPE::A {
        reply.answers.push(ResourceRecord::new(
            question.qname.clone(),
            CLASS::IN,
            TTL,
            RData::A(A::from(ip)),
        ));
    }
    match reply.build_bytes_vec_compressed() {
        Ok(bytes) => Answer::Local(bytes),
        Err(_) => Answer::Forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, Question};

    fn query(name: &str, qtype: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(0x1234);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            qtype.into(),
            CLASS::IN.into(),
            false,
        ));
        p.build_bytes_vec().unwrap()
    }

    fn lookup(name: &str) -> Option<Ipv4Addr> {
        (name == "web").then_some(Ipv4Addr::new(10, 89, 0, 2))
    }

    #[test]
    fn network_names_are_answered_and_others_forwarded() {
        let Answer::Local(bytes) = answer(&query("WEB.", TYPE::A), lookup) else {
            panic!("no local answer");
        };
        let reply = Packet::parse(&bytes).unwrap();
        assert_eq!(reply.id(), 0x1234);
        assert!(reply.has_flags(PacketFlag::RESPONSE));
        assert_eq!(reply.rcode(), RCODE::NoError);
        match &reply.answers[0].rdata {
            RData::A(a) => assert_eq!(Ipv4Addr::from(a.address), Ipv4Addr::new(10, 89, 0, 2)),
            other => panic!("{other:?}"),
        }
        let Answer::Local(bytes) = answer(&query("web", TYPE::AAAA), lookup) else {
            panic!("no local answer");
        };
        assert!(Packet::parse(&bytes).unwrap().answers.is_empty());
        assert_eq!(
            answer(&query("example.org", TYPE::A), lookup),
            Answer::Forward
        );
        assert_eq!(answer(&query("web", TYPE::MX), lookup), Answer::Forward);
        assert_eq!(answer(b"\x01\x02garbage", lookup), Answer::Ignore);
        // 12 bytes of header with QR clear but nothing parseable: a query to forward.
        assert_eq!(
            answer(&[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff], lookup),
            Answer::Forward
        );
        assert_eq!(answer(&bytes, lookup), Answer::Ignore);
        let fail = servfail(&query("x", TYPE::A));
        let p = Packet::parse(&fail).unwrap();
        assert!(p.has_flags(PacketFlag::RESPONSE));
        assert_eq!(p.rcode(), RCODE::ServerFailure);
    }
}
