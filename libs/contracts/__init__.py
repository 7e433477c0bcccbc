"""The only vocabulary services share: ids, money, the envelope, messages and topics. No I/O."""
