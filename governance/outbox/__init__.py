"""Transactional outbox: messages written in the same transaction as the change, published after commit."""
