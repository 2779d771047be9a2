raise SystemExit('remote code ran: this must never happen without --trust-remote-code')
