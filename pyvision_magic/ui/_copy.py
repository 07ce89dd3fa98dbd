"""Copy to cell: a script, run by the page, that puts a turn's code in a new cell.

Widgets have no way to reach the notebook, and JupyterLab and Notebook 7 expose
no API to page scripts, so the script drives the notebook as a user would:
select the cell showing the view, press ``b``, then write the code into the new
cell's editor. Classic Notebook has ``Jupyter.notebook``. Elsewhere (VS Code,
Voilà, a static page) the code goes to the clipboard. Either way the outcome is
written into the card's message line, since the page cannot answer the kernel.
"""

from __future__ import annotations

import html
import json
import uuid

__all__ = ["copy_to_cell_script"]

#: Milliseconds to wait for the new cell's editor after pressing ``b``.
WAIT_MS = 3000

# Written for an inline ``onerror`` handler: no ``//`` comments, ``this`` is the
# <img>. The ``%(...)s`` slots are JSON literals.
# - ``b`` goes to the element the notebook focused on the prompt's mousedown:
#   JupyterLab's key bindings match the focused element inside the notebook.
# - Only a cell that was not below before ``b`` is written to, so a failed ``b``
#   never overwrites the user's next cell.
# - The editor gets a synthetic paste, which CodeMirror 6 inserts as is (no
#   auto-indent or bracket closing). The ``cmView`` shim JupyterLab 4 keeps on
#   ``.cm-content`` is deprecated, hence only the fallback.
# - A nonce kept in ``localStorage`` stops a re-render (page reload, second
#   view of the output) from inserting the cell again.
_SCRIPT = """(function(el){
var code=%(code)s, target=%(target)s, nonce=%(nonce)s, waitMs=%(wait)s;
function say(text, bad){
  var m=target&&document.querySelector(target);
  var box=m&&(m.querySelector('.widget-html-content')||m);
  if(!box)return;
  var s=document.createElement('span');
  if(bad)s.className='pyvision-error';
  s.textContent=text;
  box.replaceChildren(s);
}
function clip(why){
  function fail(){
    say(why+' The clipboard is not available either: copy the code from the editor above.',true);}
  try{navigator.clipboard.writeText(code).then(function(){
    say(why+' The code was copied to the clipboard instead.',false);},fail);}catch(e){fail();}
}
function seen(){
  try{var k='pyvision-copied',l=JSON.parse(localStorage.getItem(k)||'[]');
    if(l.indexOf(nonce)>=0)return true;
    l.push(nonce);localStorage.setItem(k,JSON.stringify(l.slice(-50)));return false;
  }catch(e){
    if(window['pyvision-copied-'+nonce])return true;
    window['pyvision-copied-'+nonce]=1;return false;}
}
function put(cm){
  try{var dt=new DataTransfer();dt.setData('text/plain',code);
    var ev=new ClipboardEvent('paste',{clipboardData:dt,bubbles:true,cancelable:true});
    if(!cm.dispatchEvent(ev))return true;
  }catch(e){}
  try{var v=cm.cmView&&(cm.cmView.view||(cm.cmView.rootView&&cm.cmView.rootView.view));
    if(v&&v.dispatch){v.dispatch({changes:{from:0,to:v.state.doc.length,insert:code}});return true;}
  }catch(e){}
  return false;
}
if(seen())return;
try{if(window.Jupyter&&Jupyter.notebook&&Jupyter.notebook.insert_cell_below){
  var c=Jupyter.notebook.insert_cell_below('code');c.set_text(code);
  say('Inserted as a new cell below.',false);return;}}catch(e){}
var cell=el.closest('.jp-Cell'),nb=cell&&cell.closest('.jp-Notebook');
if(!nb){clip('No notebook found to insert a cell in.');return;}
var before=cell.nextElementSibling;
var prompt=cell.querySelector('.jp-InputPrompt')||cell;
prompt.dispatchEvent(new MouseEvent('mousedown',{bubbles:true,cancelable:true,button:0}));
prompt.dispatchEvent(new MouseEvent('mouseup',{bubbles:true,cancelable:true,button:0}));
var active=document.activeElement;
if(!active||!nb.contains(active)){cell.focus();active=cell;}
active.dispatchEvent(new KeyboardEvent('keydown',{key:'b',code:'KeyB',keyCode:66,which:66,
  bubbles:true,cancelable:true}));
var start=Date.now();
(function fill(){
  var next=cell.nextElementSibling;
  var fresh=next&&next!==before&&next.classList.contains('jp-Cell');
  var cm=fresh&&next.querySelector('.cm-content');
  if(cm&&put(cm)){say('Inserted as a new cell below.',false);return;}
  if(Date.now()-start<waitMs){setTimeout(fill,50);return;}
  clip(fresh?'A new cell was inserted below, but its editor could not be written to.'
            :'Could not insert a cell below this one.');
})();
})(this)"""


def copy_to_cell_script(code: str, message: str = "") -> str:
    """HTML whose inline handler inserts ``code`` as a cell below the one showing it.

    Parameters
    ----------
    code
        The cell's source, exactly.
    message
        CSS selector of the HTML widget that shows the outcome (the card's
        message line); empty to show nothing.

    The handler runs once per returned string, even when the page shows the
    widget again (a reload, a second view of the output): it remembers its
    nonce in the browser's ``localStorage``.
    """
    script = _SCRIPT % {"code": json.dumps(code), "target": json.dumps(message),
                        "nonce": json.dumps(uuid.uuid4().hex), "wait": WAIT_MS}
    attr = html.escape(script, quote=True)
    return f'<img src="data:," alt="" style="display:none" onerror="{attr}">'
