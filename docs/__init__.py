"""The contract and the guides, shipped inside the package as `harness.docs` (read through
`harness.packaged`)."""
