// Command gorender renders Ollama Modelfile TEMPLATEs with Go's own text/template, the engine
// Ollama uses, so ftkit's tests can hold its Python re-implementation (ftkit/export/go_template.py)
// against the real thing instead of against itself.
//
// stdin:  [{"template": str, "messages": [{"role", "content"}], "system": str or absent}, ...]
// stdout: [{"text": str, "error": str, "messages_path": bool}, ...]
//
// Mirrored from Ollama's template/template.go (github.com/ollama/ollama, read at commit fb30760):
//   - Parse: template.New("").Option("missingkey=zero").Funcs(funcs); funcs are json, currentDate,
//     yesterdayDate and toTypeScriptType (the last answers "any": no tool types exist here).
//   - Execute's Messages path: the data is a map[string]any with System, Messages, Tools, Response
//     (""), Think, ThinkLevel, IsThinkSet; Prompt ("") too, as the brief asks, though Ollama leaves
//     it out of that map (missingkey=zero renders it "<no value>" there: nobody writes .Prompt
//     beside .Messages). Messages go through collate: consecutive messages of one role (tool
//     messages excepted) merge with "\n\n", and System is every system message's content joined
//     with "\n\n". A case's "system" field, when present, replaces that System (ftkit's
//     render_go_template takes it as an argument).
//   - Vars/Identifiers: messages_path says whether Ollama renders the template through that path
//     at all; a template that names neither messages nor response goes through its legacy
//     Prompt/Response path, which this program does not render.
//
// Not mirrored: the legacy path, images, tool calls, thinking. Ollama prepends the Modelfile's
// SYSTEM as a message in server/routes.go, before the template; the caller does that.
// Standard library only, so it builds offline with go1.19.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

// Message mirrors the fields of Ollama's templateMessage that ftkit's templates read.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type testCase struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
	System   *string   `json:"system"`
}

type result struct {
	Text         string `json:"text"`
	Error        string `json:"error"`
	MessagesPath bool   `json:"messages_path"`
}

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate": func(args ...string) string {
		return time.Now().Format("2006-01-02")
	},
	"yesterdayDate": func(args ...string) string {
		return time.Now().AddDate(0, 0, -1).Format("2006-01-02")
	},
	"toTypeScriptType": func(v any) string { return "any" },
}

// collate is Ollama's: merge consecutive messages of one role, gather the system messages.
func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + msgs[i].Content
		} else {
			collated = append(collated, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), collated
}

// identifiers is Ollama's Identifiers: the field and variable names a parse tree mentions.
func identifiers(n parse.Node) []string {
	var names []string
	switch n := n.(type) {
	case *parse.ListNode:
		for _, c := range n.Nodes {
			names = append(names, identifiers(c)...)
		}
	case *parse.TemplateNode:
		if n.Pipe != nil {
			names = identifiers(n.Pipe)
		}
	case *parse.ActionNode:
		names = identifiers(n.Pipe)
	case *parse.IfNode:
		names = identifiers(&n.BranchNode)
	case *parse.RangeNode:
		names = identifiers(&n.BranchNode)
	case *parse.WithNode:
		names = identifiers(&n.BranchNode)
	case *parse.BranchNode:
		names = identifiers(n.Pipe)
		for _, l := range []*parse.ListNode{n.List, n.ElseList} {
			if l != nil {
				names = append(names, identifiers(l)...)
			}
		}
	case *parse.PipeNode:
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				names = append(names, identifiers(a)...)
			}
		}
	case *parse.FieldNode:
		names = n.Ident
	case *parse.VariableNode:
		names = n.Ident
	}
	return names
}

func render(c testCase) (r result) {
	defer func() { // a panic in a template function is an error of this case, not of the run
		if p := recover(); p != nil {
			r = result{Error: fmt.Sprint(p)}
		}
	}()
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(c.Template)
	if err != nil {
		return result{Error: err.Error()}
	}
	for _, name := range identifiers(tmpl.Tree.Root) {
		r.MessagesPath = r.MessagesPath || strings.ToLower(name) == "messages"
	}
	system, messages := collate(c.Messages)
	if c.System != nil {
		system = *c.System
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]any{
		"System": system, "Messages": messages, "Tools": nil, "Prompt": "", "Response": "",
		"Think": false, "ThinkLevel": "", "IsThinkSet": false,
	})
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Text = b.String()
	return r
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "gorender: reading the cases from stdin:", err)
		os.Exit(2)
	}
	results := make([]result, len(cases))
	for i, c := range cases {
		results[i] = render(c)
	}
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	if err := out.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "gorender: writing the results:", err)
		os.Exit(2)
	}
}
