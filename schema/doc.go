// Package schema embeds the JSON schema of the x-vm compose extension.
package schema
