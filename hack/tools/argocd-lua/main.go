// Command argocd-lua runs an Argo CD resource health script the way Argo CD runs a custom
// health check from argocd-cm (util/lua in Argo CD): gopher-lua, only the package, base and
// table libraries opened (no string library unless useOpenLibs is set), the object as the global
// `obj`, a one-second budget, and the returned table read as {status, message}.
//
// Usage: argocd-lua SCRIPT < objects.json   (a JSON array of objects)
// Prints a JSON array of {"status": ..., "message": ...} or {"error": ...}, one per object.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

type result struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua SCRIPT < objects.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dec := json.NewDecoder(os.Stdin)
	dec.UseNumber()
	var objs []map[string]any
	if err := dec.Decode(&objs); err != nil {
		fmt.Fprintln(os.Stderr, "reading objects:", err)
		os.Exit(1)
	}
	out := make([]result, 0, len(objs))
	for _, o := range objs {
		out = append(out, run(string(script), o))
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

func run(script string, obj map[string]any) result {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		n string
		f lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.f), Protect: true}, lua.LString(lib.n)); err != nil {
			return result{Error: err.Error()}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decode(l, obj))
	if err := l.DoString(script); err != nil {
		return result{Error: err.Error()}
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return result{Error: fmt.Sprintf("expected a table from the script, got %s", l.Get(-1).Type())}
	}
	r := result{}
	if s, ok := ret.RawGetString("status").(lua.LString); ok {
		r.Status = string(s)
	}
	if m, ok := ret.RawGetString("message").(lua.LString); ok {
		r.Message = string(m)
	}
	switch r.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		// Argo CD turns an invalid status into Unknown; report it as an error so tests see it.
		r.Error = fmt.Sprintf("invalid health status %q", r.Status)
	}
	return r
}

// decode converts JSON values to Lua values as Argo CD does (numbers become Lua numbers).
func decode(l *lua.LState, v any) lua.LValue {
	switch c := v.(type) {
	case bool:
		return lua.LBool(c)
	case json.Number:
		f, err := c.Float64()
		if err != nil {
			return lua.LString(c)
		}
		return lua.LNumber(f)
	case float64:
		return lua.LNumber(c)
	case string:
		return lua.LString(c)
	case []any:
		t := l.CreateTable(len(c), 0)
		for _, e := range c {
			t.Append(decode(l, e))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(c))
		for k, e := range c {
			t.RawSetH(lua.LString(k), decode(l, e))
		}
		return t
	}
	return lua.LNil
}
